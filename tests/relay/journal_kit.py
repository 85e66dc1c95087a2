"""Test kit for the relay's journal (relay.journal): a customer and a seller to write for, a
message to journal, a journal on the test's sessions, a row count."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import world_kit as world
from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import init_signing_key
from mailveil.relay.journal import Database, GroupCommit, NewMessage
from mailveil.relay.messages import new_token
from mailveil.vault import Vault, init_keys


def customer_and_seller(
    settings: Settings, session_factory: sessionmaker[Session]
) -> tuple[int, int]:
    """One customer and one seller, committed: (customer id, principal id)."""
    init_keys(settings)
    with session_factory() as session:
        customer = world.customer(
            session,
            Vault.open(settings),
            1,
            external_id="c",
            email="x.y@private.example",
            country="DE",
        )
        principal = world.principal(session, "seller", "s")
        session.commit()
        return customer.id, principal.id


def new_message(ids: tuple[int, int], token: str | None = None) -> NewMessage:
    now = utcnow()
    token = token or new_token()
    row: dict[str, Any] = {
        "token": token,
        "direction": "to_customer",
        "customer_id": ids[0],
        "principal_id": ids[1],
        "alias": "a@relay.example",
        "reason": "shipping",
        "message_id": f"<{token}@relay.example>",
        "size": 1,
        "sha256": "0" * 64,
        "status": "sending",
        "created_at": now,
        "updated_at": now,
    }
    return NewMessage(row, Event(kind="message", detail={"relay_message": token}))


def journal(settings: Settings, session_factory: sessionmaker[Session], **kw: Any) -> GroupCommit:
    init_signing_key(settings)
    return GroupCommit(Database(session_factory), Ledger.load(settings), **kw)


def count(session_factory: sessionmaker[Session], model: Any) -> int:
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


__all__ = ["count", "customer_and_seller", "journal", "new_message"]
