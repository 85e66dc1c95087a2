"""Hypothesis over the customer-file parsers (``contacts.importing``): CSV and NDJSON.

* round trip: records written by ``csv.writer`` / ``json.dumps`` (any text: commas, quotes,
  newlines inside quoted fields, non-ASCII) come back as they were, each numbered by the
  physical line it starts on;
* hostile lines (any text, any bytes, overlong, not UTF-8, broken quoting, deep JSON) never
  raise: each yields a record or a ``ParseError`` with a line number in the file, in order,
  and no reason quotes the file (so no address);
* a bad line costs only itself: good lines around it are still read.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailveil.contacts.importing import MAX_LINE_CHARS, ParseError, iter_csv, iter_ndjson

REAL = "ada.lovelace@private-mailbox.example"
REQUIRED = ("external_id", "email")
pytestmark = pytest.mark.slow  # hundreds of examples: in make test, not make test-fast
FUZZ = settings(max_examples=200, deadline=5000, suppress_health_check=[HealthCheck.too_slow])

cells = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\r\x00"),
    max_size=30,
).map(str.strip)
columns = st.lists(
    st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True), min_size=0, max_size=3, unique=True
).map(
    lambda extra: ["external_id", "email", *[c for c in extra if c not in ("external_id", "email")]]
)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[dict[str, str]]]:
    names = draw(columns)
    rows = draw(
        st.lists(st.fixed_dictionaries({name: cells for name in names}), min_size=1, max_size=8)
    )
    # A row of only blank cells is skipped by design; keep every row meaningful.
    rows = [row | {"external_id": row["external_id"] or "x"} for row in rows]
    return names, rows


@FUZZ
@given(tables())
def test_csv_round_trip_keeps_every_record_and_its_line(
    table: tuple[list[str], list[dict[str, str]]],
) -> None:
    names, rows = table
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    starts = []
    for row in rows:
        starts.append(out.getvalue().count("\n") + 1)
        writer.writerow([row[n] for n in names])
    # Lines as a file gives them (split at LF only: str.splitlines would split at \x0c too).
    got = list(iter_csv(io.BytesIO(out.getvalue().encode("utf-8"))))
    kept = [{k: v for k, v in row.items() if v} for row in rows]
    assert got == list(zip(starts, kept, strict=True))


@FUZZ
@given(
    st.lists(
        st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=20), st.integers())),
        min_size=1,
        max_size=8,
    )
)
def test_ndjson_round_trip(records: list[dict[str, object]]) -> None:
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    assert list(iter_ndjson(lines)) == [(i, r) for i, r in enumerate(records, start=1)]


hostile_lines = st.lists(
    st.one_of(
        st.text(max_size=80).map(lambda t: t + "\n"),
        st.binary(max_size=80).map(lambda b: b + b"\n"),
        st.sampled_from(
            [
                f'ext-1,"{REAL}\n',
                f'"unterminated,{REAL}\n',
                f"{REAL},{REAL},{REAL},{REAL}\n",
                b"\xff\xfe" + REAL.encode() + b"\n",
                "[" * 50_000 + "\n",
                f'{{"email": "{REAL}", \n',
                "x" * (MAX_LINE_CHARS + 1) + REAL + "\n",
                "\ufeffexternal_id,email\n",
                '"a""b",' + REAL + "\n",
            ]
        ),
    ),
    max_size=12,
)


@FUZZ
@given(hostile_lines, st.sampled_from(["csv", "ndjson"]))
def test_hostile_lines_never_raise_and_no_reason_quotes_the_file(
    body: list[str | bytes], fmt: str
) -> None:
    header: list[str | bytes] = ["external_id,email\n"] if fmt == "csv" else []
    lines = header + body
    parse = iter_csv if fmt == "csv" else iter_ndjson
    last = 0
    for item in parse(lines):
        line = item.line if isinstance(item, ParseError) else item[0]
        # An empty file is one error, reported at line 1.
        assert last < line <= max(len(lines), 1)
        last = line
        if isinstance(item, ParseError):
            assert REAL not in item.reason and "@" not in item.reason
            assert len(item.reason) < 300


@FUZZ
@given(hostile_lines.filter(lambda b: b))
def test_a_bad_line_costs_only_itself(body: list[str | bytes]) -> None:
    good = [
        json.dumps({"external_id": f"e{i}", "email": f"u{i}@x.example"}) + "\n" for i in range(3)
    ]
    lines: list[str | bytes] = good[:1] + body + good[1:]
    got = [item for item in iter_ndjson(lines) if not isinstance(item, ParseError)]
    ids = [record.get("external_id") for _, record in got]
    assert [i for i in ids if i in ("e0", "e1", "e2")] == ["e0", "e1", "e2"]
