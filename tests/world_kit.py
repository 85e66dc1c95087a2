"""One way to seed a world in tests: customers, principals (sellers, employees, services),
orders, cases and disclosed aliases, each made by the product's own function on the caller's
session, so that a test's world is what production would store. Nothing here commits except
the bulk import, which commits per batch as production does.

Defaults give every row a unique external id from a number; a test that cares about a value
passes it. Tests that mean to go through the API seed through `api_testkit.Api` instead
(POST /v1/customers and friends); everything else uses this module."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.access.models import RevealRequest
from mailveil.config import Settings
from mailveil.contacts.customers import create_customer, import_customers
from mailveil.contacts.disclosures import DisclosureResult, disclose, mint_aliases
from mailveil.contacts.models import Alias, Customer, Order, Principal, SupportCase
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case, create_order
from mailveil.db.base import utcnow
from mailveil.ledger.append import Ledger
from mailveil.policy import PolicyEngine
from mailveil.runtime import Runtime
from mailveil.vault import Vault

# Real-looking addresses used by the tests; every leak scan looks for these.
SECRET_DOMAIN = "private-mailbox.example"


def address(n: int, domain: str = SECRET_DOMAIN) -> str:
    return f"Secret.Person{n}@{domain}"


def customer(
    session: Session,
    vault: Vault,
    n: int,
    *,
    external_id: str | None = None,
    email: str | None = None,
    **kw: Any,
) -> Customer:
    """Customer ``cust-<n>`` at ``address(n)`` in France unless told otherwise."""
    kw.setdefault("country", "FR")
    return create_customer(
        session, vault, external_id=external_id or f"cust-{n}", email=email or address(n), **kw
    )


def imported_customers(
    session: Session,
    vault: Vault,
    rows: Iterable[tuple[int, dict[str, Any]]],
    *,
    batch_size: int = 1000,
) -> list[Customer]:
    """Many customers through the bulk import (commits per batch): ``rows`` are (line, record)
    as the importer reads them. Every row must be created."""
    made: list[int] = []
    for outcome in import_customers(session, vault, rows, batch_size=batch_size):
        assert outcome.code is None, outcome
        assert outcome.customer_id is not None
        made.append(outcome.customer_id)
    out: list[Customer] = []
    for start in range(0, len(made), 10_000):  # bounded bind parameters per query
        part = made[start : start + 10_000]
        out.extend(session.scalars(select(Customer).where(Customer.id.in_(part))))
    return out


def principal(session: Session, kind: str, external_id: str, **kw: Any) -> Principal:
    return create_principal(session, kind=kind, external_id=external_id, **kw)


def seller(session: Session, n: int = 1, *, external_id: str | None = None, **kw: Any) -> Principal:
    kw.setdefault("display_name", f"Seller {n} Ltd")
    return principal(session, "seller", external_id or f"seller-{n}", **kw)


def employee(
    session: Session, n: int = 1, *, external_id: str | None = None, **kw: Any
) -> Principal:
    kw.setdefault("display_name", f"Agent {n}")
    kw.setdefault("attributes", {"team": "support", "role": "agent", "region": "eu"})
    return principal(session, "employee", external_id or f"emp-{n}", **kw)


def service(
    session: Session,
    n: int = 1,
    templates: list[str] | None = None,
    *,
    external_id: str | None = None,
    **kw: Any,
) -> Principal:
    kw.setdefault("display_name", f"Notifier {n}")
    kw.setdefault("attributes", {"templates": templates or ["order-shipped"]})
    return principal(session, "service", external_id or f"svc-{n}", **kw)


def order(
    session: Session,
    c: Customer | int,
    s: Principal | int,
    days_ago: float = 1,
    ext: str | None = None,
    *,
    placed_at: datetime | None = None,
    **kw: Any,
) -> Order:
    """An order of customer ``c`` at seller ``s`` (rows or ids), placed ``days_ago``."""
    cid, sid = _id(c), _id(s)
    if ext is None:
        n = session.scalar(select(func.count()).select_from(Order)) or 0
        ext = f"ord-{cid}-{sid}-{n}"
    return create_order(
        session,
        external_id=ext,
        customer_id=cid,
        seller_id=sid,
        placed_at=placed_at or utcnow() - timedelta(days=days_ago),
        **kw,
    )


def case(
    session: Session,
    c: Customer | int,
    e: Principal | int | None,
    status: str = "open",
    *,
    case_ext: str | None = None,
) -> SupportCase:
    cid = _id(c)
    if case_ext is None:
        n = session.scalar(select(func.count()).select_from(SupportCase)) or 0
        case_ext = f"case-{cid}-{n}"
    return create_case(
        session,
        external_id=case_ext,
        customer_id=cid,
        assignee_id=None if e is None else _id(e),
        status=status,
    )


# What a disclosure needs besides the session.
Parts = tuple[Settings, PolicyEngine, Ledger]


def parts_of(runtime: Runtime) -> Parts:
    return runtime.settings, runtime.policy, runtime.ledger


def disclosure(
    session: Session,
    parts: Parts,
    c: Customer | int,
    p: Principal | int,
    *,
    purpose: str = "order",
    ref: str | None = None,
    actor: str = "test",
) -> DisclosureResult:
    """Ask for the customer's address to be disclosed to the principal, as production does:
    the policy decides and the ledger records the answer either way (a refusal too)."""
    settings, policy, ledger = parts
    return disclose(
        session,
        settings=settings,
        policy=policy,
        ledger=ledger,
        customer_id=_id(c),
        principal_id=_id(p),
        purpose=purpose,
        ref=ref,
        actor=actor,
    )


def disclosed(
    session: Session, parts: Parts, c: Customer | int, p: Principal | int, **how: Any
) -> Alias:
    """The alias row an allowed disclosure gives (``how``: purpose, ref, actor as for
    ``disclosure``)."""
    result = disclosure(session, parts, c, p, **how)
    assert result.allowed, result.reason
    alias = session.scalar(select(Alias).where(Alias.address == result.alias))
    assert alias is not None
    return alias


def aliases_at(
    session: Session, settings: Settings, pairs: Iterable[tuple[int, int]], at: datetime
) -> dict[tuple[int, int], tuple[str, str, bool]]:
    """Aliases for (customer id, principal id) pairs as if disclosed at ``at``, minted by the
    bulk disclosure's own insert and not ledgered: for worlds whose history matters, not how
    it was asked for. Returns what ``mint_aliases`` reports for each pair."""
    existing: dict[tuple[int, int], tuple[str, str, bool]] = {}
    mint_aliases(session, settings, dict.fromkeys(pairs, "x"), existing, at)
    return existing


def used_reveal(
    session: Session,
    employee: Principal | int,
    c: Customer | int,
    at: datetime,
    *,
    granted_at: datetime | None = None,
    case_ext: str | None = None,
) -> RevealRequest:
    """A reveal the employee asked for on a case of theirs, was granted and used: a view of
    the customer's real address at ``at``. Stored as its final row, not through the approval
    workflow (that is the access tests' subject), for the ledger-reading tests that count it."""
    eid, cid = _id(employee), _id(c)
    kase = create_case(
        session, external_id=case_ext or f"case-{cid}-{eid}", customer_id=cid, assignee_id=eid
    )
    row = RevealRequest(
        requester_id=eid,
        customer_id=cid,
        case_id=kase.id,
        justification="j" * 20,
        status="used",
        approvals_required=1,
        approvals=1,
        views_allowed=1,
        views_used=1,
        version=1,
        created_at=at,
        expires_at=at,
        granted_at=granted_at or at,
    )
    session.add(row)
    return row


def _id(row: Customer | Principal | int) -> int:
    return row if isinstance(row, int) else row.id
