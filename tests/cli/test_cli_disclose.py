"""`mailveil disclose`: allowed prints the alias, denied exits non-zero with the policy's
reason; both are in the ledger; the real address is never printed."""

from __future__ import annotations

import getpass
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_testkit import (
    Cli,
    Run,
    add_employee,
    add_order,
    add_seller,
    assert_no_address,
    customer_id,
    ledger_entries,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.aliases import alias_for_pair
from mailveil.contacts.customers import delete_customer
from mailveil.contacts.disclosures import REVOKED_REASON
from mailveil.contacts.models import Alias
from mailveil.contacts.principals import create_principal, update_principal
from mailveil.contacts.relationships import create_case, create_order
from mailveil.ledger.leaf import parse_leaf

ADDRESSES = ["olga.buyer@example.com", "piet.buyer@example.com"]
ALIAS_LINE = re.compile(r"^alias +([a-z0-9]+@relay\.mailveil\.localhost)$", re.M)
REVERSE_LINE = re.compile(
    r"^reverse alias +(acme-books\.[a-z0-9]+@relay\.mailveil\.localhost)$", re.M
)
SEQ_LINE = re.compile(r"^ledger entry +(\d+)$", re.M)


@pytest.fixture
def shop(cli: Cli, cli_settings: Settings, db: sessionmaker[Session]) -> dict[str, int]:
    """Two customers; seller s-1 has an order from c-1 only; an employee with no case."""
    Path("c.csv").write_text(
        "external_id,email,country\n"
        + "".join(f"c-{i},{a},DE\n" for i, a in enumerate(ADDRESSES, start=1))
    )
    cli.ok("customers", "import", "c.csv")
    seller = add_seller(db, "s-1", "Acme Books")
    add_order(db, "o-1", "c-1", seller)
    return {"seller": seller, "employee": add_employee(db, "e-1")}


def disclose(cli: Cli, customer: str, principal: str, purpose: str, *extra: str) -> Run:
    return cli(
        "disclose", "--customer", customer, "--principal", principal, "--purpose", purpose, *extra
    )


def test_an_allowed_disclosure_prints_the_alias(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], shop: dict[str, int]
) -> None:
    run = disclose(cli, "c-1", "seller:s-1", "order", "--ref", "o-1")
    assert run.code == 0, str(run)
    alias = ALIAS_LINE.search(run.stdout)
    reverse = REVERSE_LINE.search(run.stdout)
    seq = SEQ_LINE.search(run.stdout)
    assert alias and reverse and seq, str(run)
    assert_no_address(run, ADDRESSES)
    with db() as session:
        row = session.scalar(select(Alias).where(Alias.address == alias.group(1)))
        assert row is not None
        assert row.principal_id == shop["seller"]
        assert row.reverse_address == reverse.group(1)
        assert row.revoked_at is None
    (entry,) = ledger_entries(cli_settings)
    assert entry.seq == int(seq.group(1)) == 0
    assert entry.kind == "disclosure"
    assert entry.alias == alias.group(1)
    assert (entry.purpose, entry.ref) == ("order", "o-1")
    assert entry.actor == f"operator:{getpass.getuser()}"

    again = disclose(cli, "c-1", "seller:s-1", "order")
    assert again.code == 0, str(again)
    second = ALIAS_LINE.search(again.stdout)
    assert second is not None and second.group(1) == alias.group(1)  # stable per pair
    assert [e.kind for e in ledger_entries(cli_settings)] == ["disclosure", "disclosure"]
    assert cli.ok("ledger", "verify").stdout.startswith("ledger verifies: 2 entries")


def test_no_order_is_denied_with_the_policy_reason(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], shop: dict[str, int]
) -> None:
    run = disclose(cli, "c-2", "seller:s-1", "order")
    assert run.code == 1, str(run)
    assert run.stdout == ""
    assert run.stderr.strip() == (
        "error: denied: no order with this seller in the last 90 days (ledger entry 0)"
    )
    assert_no_address(run, ADDRESSES)
    with db() as session:
        assert session.scalars(select(Alias)).all() == []
    (entry,) = ledger_entries(cli_settings)
    assert entry.kind == "disclosure_denied"
    assert entry.alias is None
    assert parse_leaf(entry.leaf)["detail"]["reason"] == (
        "no order with this seller in the last 90 days"
    )


@pytest.mark.parametrize(
    ("principal", "purpose", "reason"),
    [
        ("seller:s-1", "support", 'a seller is only given aliases for purpose "order"'),
        ("employee:e-1", "support", "no open support case of this customer is assigned to this"),
    ],
)
def test_other_denials_name_their_rule(
    cli: Cli,
    cli_settings: Settings,
    shop: dict[str, int],
    principal: str,
    purpose: str,
    reason: str,
) -> None:
    run = disclose(cli, "c-1", principal, purpose)
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: denied: ")
    assert reason in run.flat
    assert [e.kind for e in ledger_entries(cli_settings)] == ["disclosure_denied"]


def test_a_revoked_alias_is_not_handed_out_again(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], shop: dict[str, int]
) -> None:
    first = disclose(cli, "c-1", "seller:s-1", "order")
    alias = ALIAS_LINE.search(first.stdout)
    assert alias is not None, str(first)
    cli.ok("aliases", "revoke", alias.group(1), "--reason", "leaked")
    run = disclose(cli, "c-1", "seller:s-1", "order")
    assert run.code == 1, str(run)
    assert REVOKED_REASON in run.flat
    with db() as session:
        row = alias_for_pair(session, 1, shop["seller"])
        assert row is not None and row.revoked_at is not None


@pytest.mark.parametrize(
    ("customer", "principal", "message"),
    [
        ("c-404", "seller:s-1", "error: no customer with external id 'c-404' (not-found)"),
        ("c-1", "seller:s-404", "error: no seller with external id 's-404' (not-found)"),
        (
            "c-1",
            "robot:r-1",
            "error: principal kind must be one of: seller, employee, service (invalid-input)",
        ),
        ("[/x]", "seller:s-1", "error: no customer with external id '[/x]' (not-found)"),
    ],
)
def test_unknown_parties_are_clear_errors_and_not_ledgered(
    cli: Cli,
    cli_settings: Settings,
    shop: dict[str, int],
    customer: str,
    principal: str,
    message: str,
) -> None:
    run = disclose(cli, customer, principal, "order")
    assert run.code == 1, str(run)
    assert run.stderr.strip() == message
    assert ledger_entries(cli_settings) == []


@pytest.mark.parametrize(
    ("purpose", "ref", "message"),
    [
        ("Order!", None, "purpose must be 1-64 characters"),
        ("order", "someone@example.com", "ref must not contain control characters or '@'"),
    ],
)
def test_bad_purpose_or_ref_is_a_clear_error(
    cli: Cli,
    cli_settings: Settings,
    shop: dict[str, int],
    purpose: str,
    ref: str | None,
    message: str,
) -> None:
    extra = ["--ref", ref] if ref else []
    run = disclose(cli, "c-1", "seller:s-1", purpose, *extra)
    assert run.code == 1, str(run)
    assert message in run.flat
    assert "(invalid-input)" in run.flat
    assert ledger_entries(cli_settings) == []


@pytest.mark.parametrize("principal", ["s-1", "seller:", ":s-1", ":"])
def test_a_malformed_principal_is_a_usage_error(
    cli: Cli, cli_settings: Settings, principal: str
) -> None:
    run = disclose(cli, "c-1", principal, "order")
    assert run.code == 2, str(run)
    assert run.stderr.strip() == "error: --principal must be KIND:EXTERNAL_ID, e.g. seller:s-1001"
    assert ledger_entries(cli_settings) == []


def test_the_ledger_names_the_operator_even_without_a_login_name(
    cli: Cli, cli_settings: Settings, shop: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_login() -> str:
        raise KeyError("getpwuid(): uid not found: 4242")

    monkeypatch.setattr(getpass, "getuser", no_login)
    run = disclose(cli, "c-1", "seller:s-1", "order")
    assert run.code == 0, str(run)
    (entry,) = ledger_entries(cli_settings)
    assert entry.actor == f"operator:uid-{os.getuid()}"


def test_each_kind_of_principal_through_the_cli(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], shop: dict[str, int]
) -> None:
    c1 = customer_id(db, "c-1")
    with db.begin() as session:
        create_case(session, external_id="case-1", customer_id=c1, assignee_id=shop["employee"])
        create_principal(
            session,
            kind="service",
            external_id="notifier",
            display_name="Shipping notices",
            attributes={"templates": ["order-shipped"]},
        )
    employee = disclose(cli, "c-1", "employee:e-1", "support", "--ref", "case-1")
    assert employee.code == 0, str(employee)
    assert ALIAS_LINE.search(employee.stdout)
    service = disclose(cli, "c-2", "service:notifier", "notification", "--ref", "order-shipped")
    assert service.code == 0, str(service)
    assert re.search(r"^reverse alias +shipping-notices\.", service.stdout, re.M)
    other = disclose(cli, "c-2", "service:notifier", "notification", "--ref", "newsletter")
    assert other.code == 1, str(other)
    assert "template newsletter is not owned by this service" in other.flat
    kinds = [e.kind for e in ledger_entries(cli_settings)]
    assert kinds == ["disclosure", "disclosure", "disclosure_denied"]
    for run in (employee, service, other):
        assert_no_address(run, ADDRESSES)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("suspend", "the principal is suspended"),
        ("delete", "the customer has been deleted"),
        ("old order", "no order with this seller in the last 90 days"),
    ],
)
def test_policy_guards_deny_with_their_reason(
    cli: Cli,
    cli_settings: Settings,
    db: sessionmaker[Session],
    shop: dict[str, int],
    change: str,
    reason: str,
) -> None:
    with db.begin() as session:
        if change == "suspend":
            update_principal(session, shop["seller"], status="suspended")
        elif change == "delete":
            delete_customer(session, customer_id(db, "c-1"))
        else:
            create_order(
                session,
                external_id="o-old",
                customer_id=customer_id(db, "c-2"),
                seller_id=shop["seller"],
                placed_at=datetime.now(UTC) - timedelta(days=91),
            )
    customer = "c-2" if change == "old order" else "c-1"
    run = disclose(cli, customer, "seller:s-1", "order")
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: denied: ")
    assert reason in run.flat
    assert [e.kind for e in ledger_entries(cli_settings)] == ["disclosure_denied"]
