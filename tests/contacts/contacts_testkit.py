"""Small builders for contacts tests (real rows through the real functions)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.contacts.customers import create_customer
from mailveil.contacts.models import Alias, Customer, Order, Principal, SupportCase
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case, create_order
from mailveil.db.base import utcnow
from mailveil.ledger.models import LedgerEntry
from mailveil.vault import Vault

# Real-looking addresses used by the tests; every leak scan looks for these.
SECRET_DOMAIN = "private-mailbox.example"


def address(n: int) -> str:
    return f"Secret.Person{n}@{SECRET_DOMAIN}"


def customer(session: Session, vault: Vault, n: int, **kw: Any) -> Customer:
    kw.setdefault("country", "FR")
    return create_customer(session, vault, external_id=f"cust-{n}", email=address(n), **kw)


def seller(session: Session, n: int = 1, **kw: Any) -> Principal:
    kw.setdefault("display_name", f"Seller {n} Ltd")
    return create_principal(session, kind="seller", external_id=f"seller-{n}", **kw)


def employee(session: Session, n: int = 1, **kw: Any) -> Principal:
    kw.setdefault("display_name", f"Agent {n}")
    kw.setdefault("attributes", {"team": "support", "role": "agent", "region": "eu"})
    return create_principal(session, kind="employee", external_id=f"emp-{n}", **kw)


def service(session: Session, n: int = 1, templates: list[str] | None = None) -> Principal:
    return create_principal(
        session,
        kind="service",
        external_id=f"svc-{n}",
        display_name=f"Notifier {n}",
        attributes={"templates": templates or ["order-shipped"]},
    )


def order(
    session: Session, c: Customer, s: Principal, days_ago: float = 1, ext: str | None = None
) -> Order:
    n = session.scalar(select(func.count()).select_from(Order)) or 0
    return create_order(
        session,
        external_id=ext or f"ord-{c.id}-{s.id}-{n}",
        customer_id=c.id,
        seller_id=s.id,
        placed_at=utcnow() - timedelta(days=days_ago),
    )


def case(session: Session, c: Customer, e: Principal | None, status: str = "open") -> SupportCase:
    n = session.scalar(select(func.count()).select_from(SupportCase)) or 0
    return create_case(
        session,
        external_id=f"case-{c.id}-{n}",
        customer_id=c.id,
        assignee_id=e.id if e else None,
        status=status,
    )


def snapshot(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every contacts row, for "nothing stored changed" assertions."""
    session.flush()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for model in (Customer, Principal, Order, SupportCase, Alias):
        table = model.__table__
        rows = session.execute(select(table).order_by(table.c.id)).all()
        out[table.name] = [tuple(r) for r in rows]
    return out


def ledger_rows(session: Session) -> list[LedgerEntry]:
    return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
