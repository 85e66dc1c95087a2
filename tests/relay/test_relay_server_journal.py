"""The relay's group-committing journal: many writes (and RCPT lookups) share a transaction,
a bad write fails alone, a lazy write rides on the next one, nothing queued is lost at close."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from journal_kit import count, journal, new_message
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.models import Alias
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry
from mailveil.relay.journal import GroupCommit, LedgerOnly, StatusChange
from mailveil.relay.messages import new_token
from mailveil.relay.models import RelayMessage


def test_concurrent_writes_share_commits(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory)

    async def main() -> None:
        j.start()
        await asyncio.gather(*(j.write(new_message(ids)) for _ in range(50)))
        await j.close()

    asyncio.run(main())
    assert j.writes == 50
    assert j.commits <= 3  # the first alone, the rest queued behind it
    assert count(session_factory, RelayMessage) == 50
    assert count(session_factory, LedgerEntry) == 50


def test_a_bad_write_fails_alone(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory)
    token = new_token()

    async def main() -> list[BaseException | None]:
        j.start()
        await j.write(new_message(ids, token))
        results = await asyncio.gather(
            j.write(new_message(ids)),
            j.write(new_message(ids, token)),  # duplicate token: unique constraint
            j.write(LedgerOnly(Event(kind="stranger_at_alias"))),
            return_exceptions=True,
        )
        await j.close()
        return list(results)

    results = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], IntegrityError)
    assert count(session_factory, RelayMessage) == 2
    assert count(session_factory, LedgerEntry) == 3


def test_lazy_writes_ride_on_the_next_commit_or_go_alone_after_a_delay(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory, lazy_delay=0.5)
    first, second = new_message(ids), new_message(ids)

    async def main() -> None:
        j.start()
        await j.write(first)
        lazy = j.submit(StatusChange(first.row["token"], "delivered"), lazy=True)
        await asyncio.sleep(0.05)
        await j.write(second)  # commits the lazy one with it
        assert lazy.done()
        assert j.commits == 2
        j.submit(StatusChange(first.row["token"], "rejected"), lazy=True)  # past "sending"
        alone = j.submit(StatusChange(second.row["token"], "deferred", "451"), lazy=True)
        await alone  # no other write comes: committed after the delay
        assert j.commits == 3
        await j.close()

    asyncio.run(main())
    with session_factory() as session:
        rows = session.scalars(select(RelayMessage).order_by(RelayMessage.id)).all()
        assert [(r.status, r.status_code) for r in rows] == [
            ("delivered", None),
            ("deferred", "451"),
        ]


def test_close_commits_what_is_queued(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory, lazy_delay=5.0)

    async def main() -> None:
        j.start()
        for _ in range(3):
            j.submit(new_message(ids), lazy=True)
        await j.close()

    asyncio.run(main())
    assert count(session_factory, RelayMessage) == 3


def test_lookups_share_the_batches_of_writes(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    with session_factory() as session:
        session.add(
            Alias(
                customer_id=ids[0],
                principal_id=ids[1],
                address="c7q@relay.example",
                reverse_address="shop.k9x@relay.example",
            )
        )
        session.commit()
    j = journal(settings, session_factory)

    async def main() -> list[Any]:
        j.start()
        results = await asyncio.gather(
            *(j.write(new_message(ids)) for _ in range(5)),
            j.lookup("C7Q@relay.example"),
            j.lookup("shop.k9x@relay.example"),
            j.lookup("nobody@relay.example"),
        )
        await j.close()
        return list(results[5:])

    to_customer, to_principal, unknown = asyncio.run(main())
    assert j.commits <= 2 and j.lookups == 3 and j.writes == 5
    assert (to_customer.direction, to_customer.customer_id) == ("to_customer", ids[0])
    assert (to_principal.direction, to_principal.principal_id) == ("to_principal", ids[1])
    assert to_customer.order_status is None and not to_customer.revoked
    assert unknown is None


def test_statuses_with_their_rows_share_the_upsert_of_new_rows(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    j = journal(settings, session_factory, lazy_delay=5.0)
    first, second, third = new_message(ids), new_message(ids), new_message(ids)
    statements: list[str] = []
    engine = session_factory.kw["bind"].engine

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if re.search(r'\b(?:INTO|UPDATE)\s+"?relay_messages\b', statement):
            statements.append(statement.split(None, 1)[0])

    async def main() -> None:
        j.start()
        await j.write(first)
        await j.write(second)
        with session_factory() as session:  # a bounce marked the first in the meantime
            session.execute(
                update(RelayMessage)
                .where(RelayMessage.token == first.row["token"])
                .values(status="bounced")
            )
            session.commit()
        event.listen(engine, "before_cursor_execute", seen)
        lazy = [
            j.submit(StatusChange(m.row["token"], "delivered", row=m.row), lazy=True)
            for m in (first, second)
        ]
        assert await j.lookup("nobody@relay.example") is None
        assert not any(f.done() for f in lazy)  # a lookup's batch writes no rows for them
        await j.write(third)
        assert all(f.done() for f in lazy)
        await j.close()

    try:
        asyncio.run(main())
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements == ["INSERT"]  # one upsert for all three: no UPDATE of its own
    with session_factory() as session:
        rows = session.scalars(select(RelayMessage).order_by(RelayMessage.id)).all()
        assert [r.status for r in rows] == ["bounced", "delivered", "sending"]


def test_group_commit_waits_briefly_for_other_senders(
    settings: Settings, session_factory: sessionmaker[Session], ids: tuple[int, int]
) -> None:
    async def staggered(j: GroupCommit, step: float) -> None:
        j.start()

        async def later(delay: float) -> None:
            await asyncio.sleep(delay)
            await j.write(new_message(ids))

        await asyncio.gather(later(0), later(step), later(2 * step))
        await j.close()

    together = journal(settings, session_factory, gather=1.0, gather_items=3, senders=lambda: 3)
    asyncio.run(staggered(together, 0.02))
    assert together.commits == 1
    # One connection: nobody else to wait for, each write commits at once. The writes are
    # 0.3 s apart (well inside the 1 s window, well beyond one commit even on a loaded CI
    # machine), so a wait for the window would show as fewer commits.
    alone = journal(settings, session_factory, gather=1.0, gather_items=3, senders=lambda: 1)
    asyncio.run(staggered(alone, 0.3))
    assert alone.commits == 3
    assert count(session_factory, RelayMessage) == 6
