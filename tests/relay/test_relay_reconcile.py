"""relay.reconcile: rows a stopped relay left ``sending`` become ``unknown`` (never
``delivered``) with one ``message_unknown`` entry each, and a sender's retry of a deferred or
unknown message takes over its row instead of adding a second ``message`` entry."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from journal_kit import count, journal, new_message
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry
from mailveil.relay.journal import NewMessage, StatusChange
from mailveil.relay.models import RelayMessage
from mailveil.relay.reconcile import reconcile


def keyed(ids: tuple[int, int], key: str) -> NewMessage:
    m = new_message(ids)
    return NewMessage({**m.row, "retry_key": key, "attempts": 1}, m.event)


def kinds(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as session:
        return list(session.scalars(select(LedgerEntry.kind).order_by(LedgerEntry.seq)))


def statuses(session_factory: sessionmaker[Session]) -> list[tuple[str, int]]:
    with session_factory() as session:
        rows = session.execute(
            select(RelayMessage.status, RelayMessage.attempts).order_by(RelayMessage.id)
        )
        return [(str(s), int(a)) for s, a in rows]


def age(session_factory: sessionmaker[Session], seconds: float) -> None:
    with session_factory() as session:
        session.execute(
            update(RelayMessage).values(updated_at=utcnow() - timedelta(seconds=seconds))
        )
        session.commit()


def test_old_sending_rows_become_unknown_once_and_young_ones_are_left(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory)

    async def write(n: int) -> None:
        j.start()
        for _ in range(n):
            await j.write(new_message(ids))
        await j.close()

    asyncio.run(write(3))
    age(session_factory, 700)
    asyncio.run(write(1))  # in flight in a live relay: young
    ledger = Ledger.load(settings)
    with session_factory() as session:
        done = reconcile(session, settings, ledger)
        session.commit()
    assert done.unknown == 3
    with session_factory() as session:
        assert reconcile(session, settings, ledger).unknown == 0  # nothing claimed twice
        session.commit()
    assert [s for s, _ in statuses(session_factory)] == ["unknown"] * 3 + ["sending"]
    assert kinds(session_factory) == ["message"] * 4 + ["message_unknown"] * 3
    with session_factory() as session:
        assert reconcile(session, settings, ledger, older_than=0).unknown == 1
        session.commit()
    assert "sending" not in [s for s, _ in statuses(session_factory)]


def test_a_retry_of_a_deferred_or_unknown_message_takes_over_its_row(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory)
    first, again, other = keyed(ids, "k1"), keyed(ids, "k1"), keyed(ids, "k2")

    async def main() -> list[str]:
        j.start()
        token = await j.record(first)
        deferred = Event(kind="message_deferred", detail={"relay_message": token})
        await j.write(StatusChange(token, "deferred", "451", deferred, first.row))
        j.expect_retries(60)
        tokens = [await j.record(again), await j.record(other)]
        await j.write(StatusChange(tokens[0], "delivered", row={**first.row}))
        await j.close()
        return [token, *tokens]

    token, retried, fresh = asyncio.run(main())
    assert retried == token and fresh != token
    assert statuses(session_factory) == [("delivered", 2), ("sending", 1)]
    assert kinds(session_factory) == ["message", "message_deferred", "message"]
    assert count(session_factory, RelayMessage) == 2


def test_without_the_retry_check_a_resend_is_a_new_message(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    """The check runs only while retryable rows may exist (it costs a statement)."""
    j = journal(settings, session_factory)

    async def main() -> list[str]:
        j.start()
        tokens = [await j.record(keyed(ids, "k")), await j.record(keyed(ids, "k"))]
        await j.close()
        return tokens

    a, b = asyncio.run(main())
    assert a != b
    assert kinds(session_factory) == ["message", "message"]


def test_reconcile_says_whether_retryable_rows_exist(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory)
    ledger = Ledger.load(settings)
    with session_factory() as session:
        assert not reconcile(session, settings, ledger).retryable
    row: dict[str, Any] = keyed(ids, "k").row

    async def main() -> None:
        j.start()
        await j.record(NewMessage(row, Event(kind="message")))
        await j.write(StatusChange(row["token"], "deferred", "451", None, row))
        await j.close()

    asyncio.run(main())
    with session_factory() as session:
        assert reconcile(session, settings, ledger).retryable
    age(session_factory, settings.relay_retry_window_seconds + 60)
    with session_factory() as session:
        assert not reconcile(session, settings, ledger).retryable
