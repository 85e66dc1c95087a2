"""`mailveil customers import FILE.csv|FILE.ndjson`: good rows kept, bad rows reported with
their line numbers and reasons (exit 1), and no real address ever printed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import (
    Cli,
    Run,
    addresses_by_external_id,
    assert_no_address,
    count_customers,
    table_rows,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailveil.cli import customers as customers_cli
from mailveil.config import Settings
from mailveil.contacts.customers import (
    ImportOutcome,
    get_customer_by_external_id,
    import_customers,
)

SUMMARY = "created {}, duplicates {}, errors {}"


def write(name: str, text: str) -> Path:
    path = Path(name)
    path.write_text(text, encoding="utf-8")
    return path


def problems(run: Run) -> dict[int, tuple[str, str, str]]:
    """line -> (status, external id, reason), from the table on stderr."""
    out = {}
    for row in table_rows(run.stderr):
        assert len(row) == 4, row
        out[int(row[0])] = (row[1], row[2], row[3])
    return out


def summary(run: Run) -> str:
    return run.stdout.strip().splitlines()[-1]


# -- CSV ----------------------------------------------------------------------------------------

GOOD_CSV = (
    "external_id,email,country,opt_outs,sensitive_topics,is_canary\n"
    "c-1,alice.real@example.com,DE,marketing;surveys,,\n"
    "c-2,Bruno.Real@Example.ORG,fr,,baby,false\n"
    "c-3,carla.real@example.net,US,,,true\n"
)


def test_a_good_csv_is_imported_whole(cli: Cli, cli_settings: Settings) -> None:
    run = cli("customers", "import", str(write("good.csv", GOOD_CSV)))
    assert run.code == 0, str(run)
    assert summary(run) == SUMMARY.format(3, 0, 0)
    assert "rows not imported" not in run.output
    assert addresses_by_external_id(cli_settings) == {
        "c-1": "alice.real@example.com",
        "c-2": "Bruno.Real@example.org",  # the domain is normalised, the local part kept
        "c-3": "carla.real@example.net",
    }
    assert_no_address(
        run, ["alice.real@example.com", "bruno.real@example.org", "carla.real@example.net"]
    )


def test_csv_extra_columns_are_stored(cli: Cli, db: sessionmaker[Session]) -> None:
    cli.ok("customers", "import", str(write("good.csv", GOOD_CSV)))
    with db() as session:
        one = get_customer_by_external_id(session, "c-1")
        two = get_customer_by_external_id(session, "c-2")
        three = get_customer_by_external_id(session, "c-3")
        assert (one.country, one.opt_outs, one.is_canary) == ("DE", ["marketing", "surveys"], False)
        assert (two.country, two.sensitive_topics) == ("FR", ["baby"])
        assert three.is_canary is True


BAD_CSV_ADDRESSES = [
    "anna.good@example.com",
    "not-an-address",
    "carl.badcountry@example.com",
    "dora.short@example.com",
    "emil.dupid@example.com",
    "anna.good@EXAMPLE.com",
    "fritz..dots@example.com",
    "gina.good@example.com",
]
BAD_CSV = (
    "external_id,email,country\n"  # line 1
    "c-1,anna.good@example.com,DE\n"  # 2 good
    "c-2,not-an-address,DE\n"  # 3 invalid address
    "c-3,carl.badcountry@example.com,ZZ\n"  # 4 unknown country
    "c-4,dora.short@example.com\n"  # 5 wrong column count
    "c-1,emil.dupid@example.com,AT\n"  # 6 external id repeats line 2
    "c-6,anna.good@EXAMPLE.com,AT\n"  # 7 same address as line 2 (domain case)
    "\n"  # 8 blank: skipped
    "c-8,fritz..dots@example.com,DE\n"  # 9 invalid address (consecutive dots)
    "c-9,gina.good@example.com,de\n"  # 10 good
)


def test_bad_csv_rows_are_reported_by_line_and_good_ones_kept(
    cli: Cli, cli_settings: Settings
) -> None:
    run = cli("customers", "import", str(write("mixed.csv", BAD_CSV)))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(2, 2, 4)
    found = problems(run)
    assert sorted(found) == [3, 4, 5, 6, 7, 9]
    assert found[3][:2] == ("error", "c-2")
    assert "@-sign" in found[3][2]
    assert found[4] == ("error", "c-3", "country ZZ is not an ISO 3166-1 alpha-2 code")
    assert found[5] == ("error", "", "expected 3 columns, got 2")
    assert found[6] == ("duplicate", "c-1", "external id repeats line 2")
    assert found[7] == ("duplicate", "c-6", "the address repeats line 2")
    assert found[9][:2] == ("error", "c-8")
    assert "period" in found[9][2]
    assert addresses_by_external_id(cli_settings) == {
        "c-1": "anna.good@example.com",
        "c-9": "gina.good@example.com",
    }
    assert_no_address(run, BAD_CSV_ADDRESSES)


def test_reimporting_reports_every_row_as_duplicate_and_changes_nothing(
    cli: Cli, cli_settings: Settings
) -> None:
    path = write("good.csv", GOOD_CSV)
    cli.ok("customers", "import", str(path))
    before = addresses_by_external_id(cli_settings)
    run = cli("customers", "import", str(path))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(0, 3, 0)
    found = problems(run)
    assert sorted(found) == [2, 3, 4]
    assert all(status == "duplicate" for status, _, _ in found.values())
    assert found[2][1:] == ("c-1", "external id already exists (customer 1)")
    assert addresses_by_external_id(cli_settings) == before


def test_a_known_address_under_a_new_external_id_is_a_duplicate(
    cli: Cli, cli_settings: Settings
) -> None:
    cli.ok("customers", "import", str(write("a.csv", GOOD_CSV)))
    run = cli(
        "customers",
        "import",
        str(write("b.csv", "external_id,email,country\nc-new,ALICE.REAL@example.com,DE\n")),
    )
    assert run.code == 1, str(run)
    assert problems(run) == {
        2: ("duplicate", "c-new", "the address is already registered (customer 1)")
    }
    assert count_customers(cli_settings) == 3
    assert_no_address(run, ["alice.real@example.com"])


def test_a_csv_without_its_header_row_is_refused_on_line_1(
    cli: Cli, cli_settings: Settings
) -> None:
    run = cli(
        "customers",
        "import",
        str(
            write("nohead.csv", "c-1,henry.nohead@example.com,DE\nc-2,ida.nohead@example.com,DE\n")
        ),
    )
    assert run.code == 1, str(run)
    found = problems(run)
    assert list(found) == [1]
    assert found[1][0] == "error"
    assert "missing header row" in found[1][2]
    assert count_customers(cli_settings) == 0
    assert_no_address(run, ["henry.nohead@example.com", "ida.nohead@example.com"])


def test_crlf_line_endings_and_a_byte_order_mark_are_fine(cli: Cli, cli_settings: Settings) -> None:
    path = Path("windows.csv")
    path.write_bytes(
        "\ufeffexternal_id,email,country\r\nc-1,jan.crlf@example.com,NL\r\n"
        "c-2,kim.crlf@example,NL\r\n".encode()
    )
    run = cli("customers", "import", str(path))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(1, 0, 1)
    assert list(problems(run)) == [3]
    assert addresses_by_external_id(cli_settings) == {"c-1": "jan.crlf@example.com"}


def test_a_line_that_is_not_utf8_is_reported_alone(cli: Cli, cli_settings: Settings) -> None:
    path = Path("latin1.csv")
    path.write_bytes(
        b"external_id,email,country\n"
        b"c-1,l\xe9a.latin@example.com,FR\n"
        b"c-2,marc.utf8@example.com,FR\n"
    )
    run = cli("customers", "import", str(path))
    assert run.code == 1, str(run)
    assert problems(run) == {2: ("error", "", "the line is not valid UTF-8")}
    assert addresses_by_external_id(cli_settings) == {"c-2": "marc.utf8@example.com"}


# -- NDJSON -------------------------------------------------------------------------------------


def ndjson(*lines: object) -> str:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)


def test_a_good_ndjson_file_is_imported_whole(cli: Cli, cli_settings: Settings) -> None:
    text = ndjson(
        {"external_id": "n-1", "email": "nora.json@example.com", "country": "SE"},
        "",
        {
            "external_id": 42,
            "email": "otto.json@example.com",
            "country": "se",
            "opt_outs": ["marketing"],
            "is_canary": False,
        },
    )
    for name in ("good.ndjson", "good.jsonl"):
        run = cli("customers", "import", str(write(name, text)))
        if name.endswith(".ndjson"):
            assert run.code == 0, str(run)
            assert summary(run) == SUMMARY.format(2, 0, 0)
        else:  # the same records again, through the other extension: all duplicates
            assert run.code == 1, str(run)
            assert summary(run) == SUMMARY.format(0, 2, 0)
            assert sorted(problems(run)) == [1, 3]
        assert_no_address(run, ["nora.json@example.com", "otto.json@example.com"])
    assert addresses_by_external_id(cli_settings) == {
        "n-1": "nora.json@example.com",
        "42": "otto.json@example.com",
    }


BAD_NDJSON_ADDRESSES = [
    "paul.good@example.com",
    "quinn.bad@@example.com",
    "rosa.country@example.com",
    "sam.dup@example.com",
    "tina.good@example.com",
    "ulla.field@example.com",
    "vic.type@example.com",
]


def test_bad_ndjson_lines_are_reported_by_line_and_good_ones_kept(
    cli: Cli, cli_settings: Settings
) -> None:
    text = ndjson(
        {"external_id": "n-1", "email": "paul.good@example.com", "country": "DE"},  # 1
        '{"external_id": "n-2", "email": "broken@example.com", ',  # 2 malformed JSON
        {"external_id": "n-3", "email": "quinn.bad@@example.com", "country": "DE"},  # 3
        {"external_id": "n-4", "email": "rosa.country@example.com", "country": "XX"},  # 4
        ["not", "an", "object"],  # 5
        {"external_id": "n-1", "email": "sam.dup@example.com", "country": "DE"},  # 6
        {"external_id": "n-7", "email": "ulla.field@example.com", "country": "DE", "phone": 1},
        {"external_id": "n-8", "email": "vic.type@example.com", "country": 49},  # 8
        {"external_id": "n-9", "country": "DE"},  # 9 no email
        {"external_id": "n-10", "email": "tina.good@example.com", "country": "DK"},  # 10
    )
    run = cli("customers", "import", str(write("mixed.ndjson", text)))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(2, 1, 7)
    found = problems(run)
    assert sorted(found) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert found[2][0] == "error"
    assert found[2][2].startswith("malformed JSON at column")
    assert found[3][:2] == ("error", "n-3")
    assert found[4] == ("error", "n-4", "country XX is not an ISO 3166-1 alpha-2 code")
    assert found[5] == ("error", "", "expected a JSON object, got list")
    assert found[6] == ("duplicate", "n-1", "external id repeats line 1")
    assert found[7][:2] == ("error", "n-7")
    assert "unknown field 'phone'" in found[7][2]
    assert found[8] == ("error", "n-8", "country must be an ISO 3166-1 alpha-2 code (text)")
    assert found[9] == ("error", "n-9", "email is missing")
    assert addresses_by_external_id(cli_settings) == {
        "n-1": "paul.good@example.com",
        "n-10": "tina.good@example.com",
    }
    assert_no_address(run, [*BAD_NDJSON_ADDRESSES, "broken@example.com"])


@pytest.mark.parametrize("batch", ["1", "2", "500"])
def test_batch_size_does_not_change_the_outcome(
    cli: Cli, cli_settings: Settings, batch: str
) -> None:
    run = cli("customers", "import", "--batch", batch, str(write("mixed.csv", BAD_CSV)))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(2, 2, 4)
    assert sorted(problems(run)) == [3, 4, 5, 6, 7, 9]
    assert sorted(addresses_by_external_id(cli_settings)) == ["c-1", "c-9"]


def test_a_batch_of_zero_is_a_usage_error(cli: Cli, cli_settings: Settings) -> None:
    run = cli("customers", "import", "--batch", "0", str(write("good.csv", GOOD_CSV)))
    assert run.code == 2, str(run)
    assert "--batch" in run.flat
    assert count_customers(cli_settings) == 0


def test_many_bad_rows_show_the_first_fifty_and_count_the_rest(
    cli: Cli, cli_settings: Settings
) -> None:
    rows = "".join(f"b-{i},bad-{i}.example.com,DE\n" for i in range(60))
    run = cli("customers", "import", str(write("bad.csv", "external_id,email,country\n" + rows)))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(0, 0, 60)
    assert sorted(problems(run)) == list(range(2, 52))
    assert "... and 10 more" in run.stderr
    assert count_customers(cli_settings) == 0


# -- files that cannot be read ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.csv", "missing.ndjson"])
def test_a_missing_file_is_a_clear_error(cli: Cli, cli_settings: Settings, name: str) -> None:
    run = cli("customers", "import", name)
    assert run.code == 2, str(run)
    assert run.stderr.strip() == f"error: {name}: no such file"
    assert run.stdout == ""


def test_a_directory_is_not_a_file(cli: Cli, cli_settings: Settings) -> None:
    Path("folder.csv").mkdir()
    run = cli("customers", "import", "folder.csv")
    assert run.code == 2, str(run)
    assert "folder.csv: no such file" in run.stderr


@pytest.mark.parametrize("name", ["customers.txt", "customers.json", "customers"])
def test_an_unknown_extension_is_a_clear_error(cli: Cli, cli_settings: Settings, name: str) -> None:
    write(name, GOOD_CSV)
    run = cli("customers", "import", name)
    assert run.code == 2, str(run)
    assert run.stderr.strip() == (
        f"error: cannot tell the format of '{name}': use .csv, .ndjson or .jsonl"
    )
    assert count_customers(cli_settings) == 0


@pytest.mark.parametrize(
    ("name", "text"),
    [("empty.ndjson", ""), ("empty.csv", ""), ("header-only.csv", "external_id,email,country\n")],
)
def test_an_empty_file_is_one_clear_error(
    cli: Cli, cli_settings: Settings, name: str, text: str
) -> None:
    # Issue 12 §8: an empty file used to "import" with exit 0, hiding a wrong file or export.
    run = cli("customers", "import", str(write(name, text)))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(0, 0, 1)
    [(line, (status, _ext, reason))] = problems(run).items()
    assert line == 1 and status == "error" and "nothing was imported" in reason
    assert count_customers(cli_settings) == 0


def test_an_unclosed_quote_over_a_million_lines_is_one_error(
    cli: Cli, cli_settings: Settings
) -> None:
    # Issue 12 §8: a quoted field of millions of newlines took half a minute and reported
    # millions of error rows; now the reader stops after a bounded number of lines.
    text = 'external_id,email,country\nok,olga.quote@example.com,DE\nbad,"' + "\n" * 2_000_000
    run = cli("customers", "import", str(write("unclosed.csv", text)))
    assert run.code == 1, str(run)
    assert summary(run) == SUMMARY.format(1, 0, 1)
    [(line, (status, _ext, reason))] = problems(run).items()
    assert line == 3 and status == "error" and "unclosed quote" in reason


def test_text_that_looks_like_markup_is_shown_as_it_is(cli: Cli, cli_settings: Settings) -> None:
    text = ndjson(
        {"external_id": "[/bold]", "email": "wanda.markup@example.com", "country": "QQ"},
        {"external_id": "[red]x", "email": "xena.markup@example.com", "country": "DE"},
    )
    run = cli("customers", "import", str(write("[odd].ndjson", text)))
    assert run.code == 1, str(run)
    assert problems(run) == {
        1: ("error", "[/bold]", "country QQ is not an ISO 3166-1 alpha-2 code"),
    }
    assert addresses_by_external_id(cli_settings) == {"[red]x": "xena.markup@example.com"}


# -- no address in the output, even when columns are mixed up ----------------------------------


def test_swapped_columns_never_print_the_address(cli: Cli, cli_settings: Settings) -> None:
    run = cli(
        "customers",
        "import",
        str(write("swapped.csv", "external_id,email,country\nyves.swapped@example.com,c-1,DE\n")),
    )
    assert run.code == 1, str(run)
    assert list(problems(run)) == [2]
    assert_no_address(run, ["yves.swapped@example.com"])


def test_an_address_as_a_field_name_is_never_printed(cli: Cli, cli_settings: Settings) -> None:
    text = ndjson(
        {
            "external_id": "c-1",
            "email": "zora.main@example.com",
            "country": "DE",
            "zora.other@example.com": "secondary",
        }
    )
    run = cli("customers", "import", str(write("keyed.ndjson", text)))
    assert run.code == 1, str(run)
    assert list(problems(run)) == [1]
    assert_no_address(run, ["zora.main@example.com", "zora.other@example.com"])


def test_a_failure_midway_says_what_is_already_stored(
    cli: Cli, cli_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_after_first_batch(*args: Any, **kwargs: Any) -> Iterator[ImportOutcome]:
        for n, outcome in enumerate(import_customers(*args, **kwargs), start=1):
            yield outcome
            if n == 2:  # the end of the first batch (--batch 2)
                raise OperationalError("INSERT ...", {}, Exception("disk I/O error"))

    monkeypatch.setattr(customers_cli, "import_customers", failing_after_first_batch)
    run = cli("customers", "import", "--batch", "2", str(write("good.csv", GOOD_CSV)))
    assert run.code == 1, str(run)
    assert run.stderr.splitlines() == [
        "stopped after line 3: created 2, duplicates 0, errors 0 so far (those rows are stored)",
        "error: database error: disk I/O error",
    ]
    assert sorted(addresses_by_external_id(cli_settings)) == ["c-1", "c-2"]
