"""Streaming CSV / NDJSON parsing: line numbers, per-line errors, no content echoed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from mailveil.contacts.importing import (
    EMPTY_FILE,
    MAX_LINE_CHARS,
    MAX_RECORD_LINES,
    Parsed,
    ParseError,
    detect_format,
    iter_csv,
    iter_ndjson,
    iter_records,
)


def _errors(parsed: list[Parsed]) -> dict[int, str]:
    return {p.line: p.reason for p in parsed if isinstance(p, ParseError)}


def _records(parsed: list[Parsed]) -> dict[int, dict[str, object]]:
    return {p[0]: p[1] for p in parsed if not isinstance(p, ParseError)}


def test_detect_format() -> None:
    assert detect_format("people.CSV") == "csv"
    assert detect_format("people.ndjson") == "ndjson"
    assert detect_format("people.jsonl") == "ndjson"
    with pytest.raises(ValueError, match="cannot tell"):
        detect_format("people.xlsx")


def test_csv_rows_and_errors_by_line() -> None:
    text = (
        "\ufeffExternal_ID, Email ,country\n"  # BOM and messy header names
        "a,a@example.com,FR\n"
        "\n"
        'b,"b@example.com",DE\n'
        "c,c@example.com\n"
        'd,"multi\nline@example.com",FR\n'
        'e,"unterminated@example.com,FR\n'
    )
    parsed = list(iter_csv(io.StringIO(text)))
    records = _records(parsed)
    assert records[2] == {"external_id": "a", "email": "a@example.com", "country": "FR"}
    assert records[4]["email"] == "b@example.com"
    assert records[6]["email"] == "multi\nline@example.com"  # numbered by its first line
    errors = _errors(parsed)
    assert errors[5] == "expected 3 columns, got 2"
    assert 8 in errors and "malformed CSV" in errors[8]
    assert "unterminated" not in errors[8]


@pytest.mark.parametrize(
    "text",
    ["", "a@example.com,FR\n", "name,country\nx,FR\n", "external_id,email,email\n"],
)
def test_csv_missing_header_is_reported_once(text: str) -> None:
    parsed = list(iter_csv(io.StringIO(text)))
    assert len(parsed) == 1 and isinstance(parsed[0], ParseError) and parsed[0].line == 1
    assert "a@example.com" not in parsed[0].reason
    if not text:  # an empty file is one clear error too (issue 12 §8), not a silent success
        assert parsed[0].reason == EMPTY_FILE


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.parametrize("text", ["", "\n\n  \n", "external_id,email,country\n"])
def test_a_file_without_records_is_one_error(fmt: str, text: str) -> None:
    if fmt == "ndjson" and text.startswith("external_id"):
        return
    parsed = list(iter_records(io.StringIO(text), fmt))  # type: ignore[arg-type]
    assert len(parsed) == 1 and isinstance(parsed[0], ParseError) and parsed[0].line == 1
    # Blank lines where a CSV header belongs are reported as the missing header.
    assert "nothing was imported" in parsed[0].reason or "missing header" in parsed[0].reason


def test_an_unclosed_quote_over_millions_of_lines_is_one_error_read_no_further() -> None:
    # A quoted field holding millions of newlines: one error, and the reader stops after
    # MAX_RECORD_LINES lines instead of reading (and reporting) millions more.
    lines_read = 0

    def lines() -> Iterator[str]:
        nonlocal lines_read
        for text in ["external_id,email,country\n", 'a,"=x\n'] + ["\n"] * 3_000_000:
            lines_read += 1
            yield text

    parsed = list(iter_csv(lines()))
    assert len(parsed) == 1 and isinstance(parsed[0], ParseError)
    assert parsed[0].line == 2 and "unclosed quote" in parsed[0].reason
    assert lines_read <= MAX_RECORD_LINES + 3


def test_csv_nul_bytes_are_left_to_field_validation() -> None:
    # The csv module accepts NUL since 3.11; external ids and addresses refuse it later.
    text = "external_id,email,country\na,a@example.com,FR\nb,b\x00@example.com,FR\nc,c@x.org,DE\n"
    parsed = list(iter_csv(io.StringIO(text)))
    assert sorted(_records(parsed)) == [2, 3, 4]
    assert _records(parsed)[3]["email"] == "b\x00@example.com"


def test_ndjson_lines() -> None:
    lines = [
        json.dumps({"external_id": "a"}),
        "   ",
        '{"external_id": "b",',
        "[1, 2]",
        '"just a string"',
        "null",
        json.dumps({"external_id": "c"}),
        "[" * 100_000,
    ]
    parsed = list(iter_ndjson(io.StringIO("\n".join(lines) + "\n")))
    assert sorted(_records(parsed)) == [1, 7]
    errors = _errors(parsed)
    assert sorted(errors) == [3, 4, 5, 6, 8]
    assert errors[3].startswith("malformed JSON at column")
    assert errors[4] == "expected a JSON object, got list"
    assert errors[6] == "expected a JSON object, got NoneType"
    assert errors[8] in (
        "JSON nested too deeply",
        f"the line is longer than {MAX_LINE_CHARS} characters",
    ) or errors[8].startswith("malformed JSON")


def test_bytes_input_undecodable_and_oversized_lines() -> None:
    data = [
        b'{"external_id": "a"}\n',
        b'{"external_id": "\xff"}\n',
        b'{"external_id": "' + b"x" * (MAX_LINE_CHARS + 10) + b'"}\n',
        b'{"external_id": "d"}',
    ]
    parsed = list(iter_records(data, "ndjson"))
    assert sorted(_records(parsed)) == [1, 4]
    assert _errors(parsed) == {
        2: "the line is not valid UTF-8",
        3: f"the line is longer than {MAX_LINE_CHARS} characters",
    }


def test_parsing_streams_without_reading_ahead() -> None:
    consumed: list[int] = []

    def lines() -> Iterator[str]:
        yield "external_id,email,country\n"
        for i in range(1, 1_000_000):
            consumed.append(i)
            yield f"c{i},c{i}@example.com,FR\n"

    parser = iter_records(lines(), "csv")
    first = [next(parser) for _ in range(3)]
    assert [p[0] for p in first if not isinstance(p, ParseError)] == [2, 3, 4]
    assert len(consumed) <= 4


def test_unknown_format() -> None:
    with pytest.raises(ValueError):
        iter_records([], "xml")  # type: ignore[arg-type]
