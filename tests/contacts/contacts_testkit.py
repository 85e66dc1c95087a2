"""What contacts tests read back (the world itself is seeded with world_kit)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts.models import Alias, Customer, Order, Principal, SupportCase
from mailveil.ledger.models import LedgerEntry


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
