"""Reading the ledger: one entry, and entries by alias, subject, actor or kind, paged by seq."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mailveil.db.lookup import get_or_not_found
from mailveil.errors import InvalidInput
from mailveil.ledger.append import ledger_size
from mailveil.ledger.models import LedgerEntry

MAX_PAGE = 10_000


def _page(
    session: Session, where: ColumnElement[bool], after_seq: int | None, limit: int
) -> list[LedgerEntry]:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    stmt = select(LedgerEntry).where(where)
    if after_seq is not None:
        stmt = stmt.where(LedgerEntry.seq > after_seq)
    return list(session.scalars(stmt.order_by(LedgerEntry.seq).limit(limit)))


def entries_for_alias(
    session: Session, alias: str, after_seq: int | None = None, limit: int = 100
) -> list[LedgerEntry]:
    """Entries naming ``alias``, oldest first; pass the last seq seen as ``after_seq``."""
    return _page(session, LedgerEntry.alias == alias, after_seq, limit)


def entries_for_subject(
    session: Session, subject: str, after_seq: int | None = None, limit: int = 100
) -> list[LedgerEntry]:
    return _page(session, LedgerEntry.subject == subject, after_seq, limit)


def entries_for_actor(
    session: Session, actor: str, after_seq: int | None = None, limit: int = 100
) -> list[LedgerEntry]:
    return _page(session, LedgerEntry.actor == actor, after_seq, limit)


def entries_of_kind(
    session: Session, kind: str, after_seq: int | None = None, limit: int = 100
) -> list[LedgerEntry]:
    return _page(session, LedgerEntry.kind == kind, after_seq, limit)


def get_entry(session: Session, seq: int) -> LedgerEntry:
    return get_or_not_found(session, LedgerEntry, seq, "ledger entry")


def entry_dict(entry: LedgerEntry) -> dict[str, Any]:
    """An entry as JSON-ready data (hashes in hex, detail parsed)."""
    return {
        "seq": entry.seq,
        "time": entry.time.isoformat(),
        "kind": entry.kind,
        "actor": entry.actor,
        "subject": entry.subject,
        "alias": entry.alias,
        "purpose": entry.purpose,
        "ref": entry.ref,
        "detail": json.loads(entry.detail),
        "prev_hash": entry.prev_hash,
        "leaf_hash": bytes(entry.leaf_hash).hex(),
        "leaf": entry.leaf,
    }


size = ledger_size

__all__ = [
    "entries_for_actor",
    "entries_for_alias",
    "entries_for_subject",
    "entries_of_kind",
    "entry_dict",
    "get_entry",
    "size",
]
