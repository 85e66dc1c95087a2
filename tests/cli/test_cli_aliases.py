"""`mailveil aliases show|revoke`."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from cli_testkit import Cli, add_order, add_seller, assert_no_address, disclose_to, ledger_entries
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.aliases import get_alias
from mailveil.ledger.leaf import parse_leaf

ADDRESS = "quentin.buyer@example.com"


@pytest.fixture
def alias(cli: Cli, cli_settings: Settings, db: sessionmaker[Session]) -> str:
    """An alias of customer c-1 disclosed to seller s-1 (through the contacts function)."""
    Path("c.csv").write_text(f"external_id,email,country\nc-1,{ADDRESS},DE\n")
    cli.ok("customers", "import", "c.csv")
    seller = add_seller(db, "s-1", "Acme Books")
    add_order(db, "o-1", "c-1", seller)
    result = disclose_to(db, cli_settings, "c-1", seller, ref="o-1")
    assert result.allowed and result.alias
    return result.alias


def test_show_prints_who_the_alias_was_disclosed_to(cli: Cli, alias: str) -> None:
    run = cli.ok("aliases", "show", alias)
    report = json.loads(run.stdout)
    assert report["alias"]["address"] == alias
    assert report["alias"]["revoked_at"] is None
    assert report["alias"]["first_disclosed_at"] is not None
    assert report["customer"] == {"id": 1, "external_id": "c-1"}
    assert report["principal"]["kind"] == "seller"
    assert report["principal"]["external_id"] == "s-1"
    assert report["principal"]["display_name"] == "Acme Books"
    (entry,) = report["history"]
    assert entry["kind"] == "disclosure"
    assert entry["alias"] == alias
    assert entry["ref"] == "o-1"
    assert report["next_after_seq"] is None
    assert_no_address(run, [ADDRESS])


def test_show_is_case_insensitive_and_trims(cli: Cli, alias: str) -> None:
    run = cli.ok("aliases", "show", f"  {alias.upper()} ")
    assert json.loads(run.stdout)["alias"]["address"] == alias


def test_show_is_not_confused_by_a_narrow_terminal(cli: Cli, alias: str) -> None:
    run = cli.ok("aliases", "show", alias, env={"COLUMNS": "40"})
    report = json.loads(run.stdout)
    assert report["history"][0]["leaf"].startswith('{"prev":"')


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("nobody@relay.mailveil.localhost", "error: no such alias (not-found)"),
        ("[/x]", "error: no such alias (not-found)"),
        ("  ", "error: alias must be an address on the relay domain (invalid-input)"),
    ],
)
def test_show_of_an_unknown_alias_is_a_clear_error(
    cli: Cli, alias: str, address: str, message: str
) -> None:
    run = cli("aliases", "show", address)
    assert run.code == 1, str(run)
    assert run.stderr.strip() == message
    assert run.stdout == ""


def test_show_does_not_reveal_the_real_address_when_asked_for_it(cli: Cli, alias: str) -> None:
    run = cli("aliases", "show", ADDRESS)
    assert run.code == 1, str(run)
    assert run.stderr.strip() == "error: no such alias (not-found)"


def test_revoke_marks_the_alias_and_writes_the_ledger(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], alias: str
) -> None:
    run = cli.ok("aliases", "revoke", alias, "--reason", "seen in a spam run")
    assert run.stdout.strip() == f"✓ revoked {alias}"
    with db() as session:
        row = get_alias(session, alias)
        assert row.revoked_at is not None
        assert row.revoked_reason == "seen in a spam run"
        assert row.revoked_by == f"operator:{getpass.getuser()}"
    entries = ledger_entries(cli_settings)
    assert [e.kind for e in entries] == ["disclosure", "alias_revoked"]
    assert entries[1].alias == alias
    assert entries[1].actor == f"operator:{getpass.getuser()}"
    assert parse_leaf(entries[1].leaf)["detail"]["reason"] == "seen in a spam run"

    shown = json.loads(cli.ok("aliases", "show", alias).stdout)
    assert shown["alias"]["revoked_reason"] == "seen in a spam run"
    assert [h["kind"] for h in shown["history"]] == ["disclosure", "alias_revoked"]
    cli.ok("ledger", "verify")


def test_revoking_twice_is_an_error_that_changes_nothing(
    cli: Cli, cli_settings: Settings, alias: str
) -> None:
    cli.ok("aliases", "revoke", alias, "--reason", "leak")
    # On a narrow terminal too the error is one line (never hard-wrapped into a log).
    run = cli("aliases", "revoke", alias, "--reason", "again", env={"COLUMNS": "40"})
    assert run.code == 1, str(run)
    assert run.stderr == f"error: alias {alias} was already revoked (revoked)\n"
    assert len(ledger_entries(cli_settings)) == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nobody@relay.mailveil.localhost", "--reason", "x"], 1, "no such alias"),
        (["{alias}", "--reason", "   "], 1, "reason must be 1-500 characters"),
        (["{alias}"], 2, "Missing option '--reason'"),
    ],
)
def test_revoke_refusals(
    cli: Cli, cli_settings: Settings, alias: str, args: list[str], code: int, message: str
) -> None:
    run = cli("aliases", "revoke", *(a.format(alias=alias) for a in args))
    assert run.code == code, str(run)
    assert message in run.flat
    assert [e.kind for e in ledger_entries(cli_settings)] == ["disclosure"]


def test_show_prints_names_exactly(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], alias: str
) -> None:
    seller = add_seller(db, "s-2", "Shop :smile: [b]Books[/b]")
    add_order(db, "o-2", "c-1", seller)
    other = disclose_to(db, cli_settings, "c-1", seller)
    assert other.alias
    report = json.loads(cli.ok("aliases", "show", other.alias).stdout)
    assert report["principal"]["display_name"] == "Shop :smile: [b]Books[/b]"
