"""The relay's database work: one worker that batches, and reads in worker threads.

``Journal`` is the relay's database worker. Everything a message needs from the database on
its common path goes through it: the RCPT lookup (``lookup``) and the writes (a
``relay_messages`` row with its ``message`` ledger entry, a status change, a refusal or
stranger event). Its task takes everything queued since its last batch and runs it in one
transaction -- the writes first (one multi-row INSERT, one UPDATE per status, one ledger
append for all the events), then one SELECT for all the recipients looked up (an IN list) --
commits, and wakes every waiter. Under load the messages of many connections share one
transaction (the ledger head row serialises appenders anyway, so one worker loses nothing),
which is what keeps the database round trips per message small. If a batch fails, each item
is retried alone so one bad write cannot fail the others.

Other reads (API-key checks, a reply's thread, a data key not yet cached) run in a worker
thread (``Database.run``), on PostgreSQL in autocommit: one round trip each.

A write is acknowledged only after its commit: the relay answers the SMTP client after that.
The one exception is a message's "delivered" status (``submit(..., lazy=True)``): the message
and its ledger entry were committed before delivery, so the status waits for the next batch
(or ``LAZY_DELAY``) and shares its commit instead of delaying the 250.

Round trips per batch (SQLite, statements plus commits and rollbacks as counted by
``benchmarks/relay.py``): BEGIN, INSERT relay_messages, UPDATE relay_messages (statuses), the
ledger append (UPDATE, SELECT, INSERT, UPDATE of its head and entries), SELECT aliases
(lookups), COMMIT -- each only when the batch has that kind of item -- shared by every
message in the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, insert, update
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.ledger.append import append
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner
from mailveil.relay.messages import RelayMessage
from mailveil.relay.routes import Route, lookup_routes

log = logging.getLogger("mailveil.relay")
T = TypeVar("T")
MAX_BATCH = 256
LAZY_DELAY = 0.05
# Core statements on the table: no ORM unit of work for rows nobody reads back here.
_messages = cast(Table, RelayMessage.__table__)


class Database:
    """Runs blocking session work in worker threads.

    Work that only reads (``commit=False``) runs on PostgreSQL in autocommit: one network
    round trip per query instead of BEGIN, query, ROLLBACK. A session factory bound to one
    Connection (tests roll back through one) cannot be used by two threads at once, so work
    is serialised then; an Engine-bound factory runs freely.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory
        bind = session_factory.kw.get("bind")
        self._lock = threading.Lock() if isinstance(bind, Connection) else None
        self.read_factory = session_factory
        if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
            self.read_factory = sessionmaker(
                bind=bind.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )

    def _call(self, fn: Callable[[Session], T], commit: bool) -> T:
        factory = self.session_factory if commit else self.read_factory
        with self._lock or contextlib.nullcontext(), factory() as session:
            try:
                result = fn(session)
                if commit:
                    session.commit()
                return result
            except BaseException:
                session.rollback()
                raise

    async def run(self, fn: Callable[[Session], T], *, commit: bool = False) -> T:
        """``fn(session)`` in a worker thread; ``commit``: it writes, commit when it returns."""
        return await asyncio.to_thread(self._call, fn, commit)


@dataclass(frozen=True)
class NewMessage:
    """A relay_messages row (column values) and its ledger entry, before delivery."""

    row: dict[str, Any]
    event: Event


@dataclass(frozen=True)
class StatusChange:
    """The outcome of a message still marked ``sending`` (a row already past it is left)."""

    token: str
    status: str
    status_code: str | None = None
    event: Event | None = None


@dataclass(frozen=True)
class LedgerOnly:
    event: Event


@dataclass(frozen=True)
class _Wake:
    """Writes nothing; wakes a writer waiting on lazy writes (flush, close)."""


@dataclass(frozen=True)
class Lookup:
    """The RCPT query for one relay-domain address (answered with a ``Route`` or None)."""

    address: str


Write = NewMessage | StatusChange | LedgerOnly | _Wake
Item = Write | Lookup


@dataclass
class _Pending:
    item: Item
    done: asyncio.Future[Any] = field(repr=False)
    lazy: bool = False


def apply_writes(
    session: Session, writes: Sequence[Write], settings: Settings, signer: CheckpointSigner
) -> None:
    """Everything in ``writes``, in the caller's transaction (does not commit)."""
    rows = [w.row for w in writes if isinstance(w, NewMessage)]
    if rows:
        session.execute(insert(_messages), rows)
    by_status: dict[tuple[str, str | None], list[str]] = {}
    for w in writes:
        if isinstance(w, StatusChange):
            by_status.setdefault((w.status, w.status_code), []).append(w.token)
    now = utcnow()
    for (status, code), tokens in by_status.items():
        # Only from "sending": a bounce (relay/bounces.py, its own transaction) may already
        # have marked the row, and a lazily written "delivered" must not undo that.
        session.execute(
            update(_messages)
            .where(_messages.c.token.in_(tokens), _messages.c.status == "sending")
            .values(status=status, status_code=code, updated_at=now)
        )
    events = [w.event for w in writes if not isinstance(w, _Wake) and w.event is not None]
    if events:
        append(session, events, settings, signer)


def apply_batch(
    session: Session, items: Sequence[Item], settings: Settings, signer: CheckpointSigner
) -> dict[str, Route]:
    """The writes, then one query for every lookup, in the caller's transaction (does not
    commit). Writing first takes SQLite's write lock before the read, so the transaction never
    has to turn a read snapshot into a write one (which fails if another process wrote)."""
    apply_writes(session, [i for i in items if not isinstance(i, Lookup)], settings, signer)
    addresses = [i.address for i in items if isinstance(i, Lookup)]
    return lookup_routes(session, addresses) if addresses else {}


class Journal:
    """Group-committing database worker; ``start`` it on the event loop that uses it."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        signer: CheckpointSigner,
        *,
        max_batch: int = MAX_BATCH,
        lazy_delay: float = LAZY_DELAY,
    ) -> None:
        self.db = db
        self.settings = settings
        self.signer = signer
        self.max_batch = max_batch
        self.lazy_delay = lazy_delay
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0
        self.lookups = 0

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="relay-journal")

    async def write(self, w: Write) -> None:
        """Queue ``w`` and return once it is committed (or raise why it was not)."""
        await self.submit(w)

    async def lookup(self, address: str) -> Route | None:
        """The route for ``address`` (see ``routes``), read in the next batch's transaction."""
        if self._queue is None:
            raise RuntimeError("journal not started")
        done: asyncio.Future[Route | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(Lookup(address.strip().lower()), done))
        result: Route | None = await done
        return result

    def submit(self, w: Write, *, lazy: bool = False) -> asyncio.Future[None]:
        """Queue ``w``; the future resolves when it is committed. A failure nobody awaits is
        logged (by kind, never content).

        ``lazy``: nobody waits for it, so when only lazy writes are queued the writer waits up
        to ``lazy_delay`` seconds for a write someone does wait for and commits them together
        (a delivered status rides on the next message's commit instead of paying for one)."""
        if self._queue is None:
            raise RuntimeError("journal not started")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_log_unawaited_failure)
        self._queue.put_nowait(_Pending(w, done, lazy))
        return done

    async def flush(self) -> None:
        """Return once everything queued so far (lazy writes too) is committed or failed."""
        if self._queue is not None:
            self._queue.put_nowait(_Pending(_Wake(), asyncio.get_running_loop().create_future()))
            await self._queue.join()

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None or self._queue is None:
            return
        await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            if all(p.lazy for p in batch):
                with contextlib.suppress(TimeoutError):
                    batch.append(await asyncio.wait_for(queue.get(), self.lazy_delay))
                while len(batch) < self.max_batch and not queue.empty():
                    batch.append(queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _commit(self, batch: list[_Pending]) -> None:
        for pending in [p for p in batch if isinstance(p.item, _Wake)]:
            _settle(pending.done, None)
        batch = [p for p in batch if not isinstance(p.item, _Wake)]
        if not batch:
            return
        try:
            routes = await self.db.run(self._batch([p.item for p in batch]), commit=True)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].done, exc)
                return
            for pending in batch:  # each alone: one bad write must not fail the others
                try:
                    alone = await self.db.run(self._batch([pending.item]), commit=True)
                except Exception as one:
                    _settle(pending.done, one)
                else:
                    _settle(pending.done, None, _answer(pending.item, alone))
            return
        self.commits += 1
        self.writes += sum(not isinstance(p.item, Lookup) for p in batch)
        self.lookups += sum(isinstance(p.item, Lookup) for p in batch)
        for pending in batch:
            _settle(pending.done, None, _answer(pending.item, routes))

    def _batch(self, items: list[Item]) -> Callable[[Session], dict[str, Route]]:
        return lambda s: apply_batch(s, items, self.settings, self.signer)


def _answer(item: Item, routes: dict[str, Route]) -> Route | None:
    return routes.get(item.address) if isinstance(item, Lookup) else None


def _log_unawaited_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("relay journal: write failed (%s)", type(done.exception()).__name__)


def _settle(done: asyncio.Future[Any], exc: BaseException | None, result: Any = None) -> None:
    if done.done():  # the waiter was cancelled (client went away): nothing to tell
        return
    if exc is None:
        done.set_result(result)
    else:
        done.set_exception(exc)


__all__ = [
    "Database",
    "Journal",
    "LedgerOnly",
    "Lookup",
    "NewMessage",
    "StatusChange",
    "Write",
    "apply_batch",
    "apply_writes",
]
