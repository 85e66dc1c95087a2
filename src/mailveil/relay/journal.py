"""The relay's database work: reads in worker threads, writes by group commit.

Reads (the RCPT lookup, API-key checks, thread lookups) run in a worker thread
(``Database.run``) so the event loop keeps serving other connections.

Writes (a ``relay_messages`` row with its ``message`` ledger entry, a status change, a
refusal or stranger event) are queued to ``Journal`` and awaited: one writer task takes
everything queued since its last commit and writes it in one transaction -- one multi-row
INSERT, one UPDATE per status, one ledger append for all the events -- then wakes every
waiter. Under load many messages share one commit (the ledger head row serialises appenders
anyway, so one writer loses nothing), which keeps the database round trips per message small.
If a batch fails, each write is retried alone so one bad write cannot fail the others.

A write is acknowledged only after its commit: the relay answers the SMTP client after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, insert, update
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.ledger.append import append
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner
from mailveil.relay.messages import RelayMessage

T = TypeVar("T")
MAX_BATCH = 256


class Database:
    """Runs blocking session work in worker threads.

    A session factory bound to one Connection (tests roll back through one) cannot be used by
    two threads at once, so work is serialised then; an Engine-bound factory runs freely.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory
        bind = session_factory.kw.get("bind")
        self._lock = threading.Lock() if isinstance(bind, Connection) else None

    def _call(self, fn: Callable[[Session], T], commit: bool) -> T:
        with self._lock or contextlib.nullcontext(), self.session_factory() as session:
            try:
                result = fn(session)
                if commit:
                    session.commit()
                return result
            except BaseException:
                session.rollback()
                raise

    async def run(self, fn: Callable[[Session], T], *, commit: bool = False) -> T:
        return await asyncio.to_thread(self._call, fn, commit)


@dataclass(frozen=True)
class NewMessage:
    """A relay_messages row (column values) and its ledger entry, before delivery."""

    row: dict[str, Any]
    event: Event


@dataclass(frozen=True)
class StatusChange:
    token: str
    status: str
    status_code: str | None = None
    event: Event | None = None


@dataclass(frozen=True)
class LedgerOnly:
    event: Event


Write = NewMessage | StatusChange | LedgerOnly


@dataclass
class _Pending:
    write: Write
    done: asyncio.Future[None] = field(repr=False)


def apply_writes(
    session: Session, writes: Sequence[Write], settings: Settings, signer: CheckpointSigner
) -> None:
    """Everything in ``writes``, in the caller's transaction (does not commit)."""
    rows = [w.row for w in writes if isinstance(w, NewMessage)]
    if rows:
        session.execute(insert(RelayMessage), rows)
    by_status: dict[tuple[str, str | None], list[str]] = {}
    for w in writes:
        if isinstance(w, StatusChange):
            by_status.setdefault((w.status, w.status_code), []).append(w.token)
    now = utcnow()
    for (status, code), tokens in by_status.items():
        session.execute(
            update(RelayMessage)
            .where(RelayMessage.token.in_(tokens))
            .values(status=status, status_code=code, updated_at=now)
        )
    events = [w.event for w in writes if w.event is not None]
    if events:
        append(session, events, settings, signer)


class Journal:
    """Group-committing writer; ``start`` it on the event loop that calls ``write``."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        signer: CheckpointSigner,
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.db = db
        self.settings = settings
        self.signer = signer
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="relay-journal")

    async def write(self, w: Write) -> None:
        """Queue ``w`` and return once it is committed (or raise why it was not)."""
        if self._queue is None:
            raise RuntimeError("journal not started")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(w, done))
        await done

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None or self._queue is None:
            return
        await self._queue.join()
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
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _commit(self, batch: list[_Pending]) -> None:
        writes = [p.write for p in batch]
        try:
            await self.db.run(
                lambda s: apply_writes(s, writes, self.settings, self.signer), commit=True
            )
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].done, exc)
                return
            for pending in batch:
                try:
                    await self.db.run(self._one(pending.write), commit=True)
                except Exception as one:
                    _settle(pending.done, one)
                else:
                    _settle(pending.done, None)
            return
        self.commits += 1
        self.writes += len(batch)
        for pending in batch:
            _settle(pending.done, None)

    def _one(self, w: Write) -> Callable[[Session], None]:
        return lambda s: apply_writes(s, [w], self.settings, self.signer)


def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():  # the waiter was cancelled (client went away): nothing to tell
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)


__all__ = [
    "Database",
    "Journal",
    "LedgerOnly",
    "NewMessage",
    "StatusChange",
    "Write",
    "apply_writes",
]
