"""The relay's database work: one worker that batches, and reads in worker threads.

``GroupCommit`` is the relay's database worker. Everything a message needs from the database on
its common path goes through it: the RCPT lookup (``lookup``; read on its own while only one
SMTP connection is open, as there is nothing to share a transaction with) and the writes (a
``relay_messages`` row with its ``message`` ledger entry, a status change, a refusal or
stranger event). Its task takes everything queued since its last batch and runs it in one
transaction -- the writes first (one upsert for the new rows and the status changes that
carry their row, one ledger append for all the events), then one SELECT for all the
recipients looked up (an IN list) -- commits, and wakes every waiter. Under load the messages
of many connections share one transaction (the ledger head row serialises appenders anyway,
so one worker loses nothing), which is what keeps the database round trips per message
small: with other connections open, a batch waits up to ``gather`` seconds for up to
``gather_items`` items (a batch of lookups alone waits the whole window for a message row to
share its transaction with). If a batch fails, each item is retried alone so one bad write
cannot fail the others.

Other reads (API-key checks, a reply's thread, a data key not yet cached) run in a worker
thread (``Database.run``), on PostgreSQL in autocommit: one round trip each.

A write is acknowledged only after its commit: the relay answers the SMTP client after that.
The one exception is a message's "delivered" status (``submit(..., lazy=True)``): the message
and its ledger entry were committed before delivery, so the status waits for the next batch
that writes message rows (or ``LAZY_DELAY``) and joins its upsert instead of delaying the 250.

Round trips per batch (SQLite, statements plus commits and rollbacks as counted by
``benchmarks/relay.py``): BEGIN, the relay_messages upsert, the ledger append (UPDATE ...
RETURNING of its head, INSERT entries, UPDATE of the head), SELECT aliases (lookups), COMMIT
-- each only when the batch has that kind of item -- shared by every message in the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailveil.db.base import utcnow
from mailveil.db.session import SQLITE_PROMPT
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.relay.models import RelayMessage
from mailveil.relay.reconcile import take_over_retries
from mailveil.relay.routes import Route, lookup_routes

log = logging.getLogger("mailveil.relay")
T = TypeVar("T")
MAX_BATCH = 256
LAZY_DELAY = 0.05
# Group commit: a batch waits up to GATHER seconds for up to GATHER_ITEMS items (never more
# than there are SMTP connections to send them), so concurrent messages share a transaction.
GATHER = 0.005
GATHER_ITEMS = 4
# Core statements on the table: no ORM unit of work for rows nobody reads back here.
_messages = cast(Table, RelayMessage.__table__)
# Statuses an outcome may still replace.
_OPEN = ("sending", "unknown")


class Database:
    """Runs blocking session work in worker threads.

    Work that only reads (``commit=False``) runs on PostgreSQL in autocommit: one network
    round trip per query instead of BEGIN, query, ROLLBACK. A session factory bound to one
    Connection (tests roll back through one) cannot be used by two threads at once, so work
    is serialised then; an Engine-bound factory runs freely.
    """

    # Threads of the relay's own (not the event loop's default executor, which ``mailveil
    # serve`` shares with the API's background work): a busy API cannot take them.
    THREADS = 8

    def __init__(self, session_factory: sessionmaker[Session], *, threads: int = THREADS) -> None:
        self.session_factory = session_factory
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        bind = session_factory.kw.get("bind")
        self._lock = threading.Lock() if isinstance(bind, Connection) else None
        self.read_factory = session_factory
        # Writes on SQLite take the write lock at BEGIN, retrying promptly (SQLITE_PROMPT);
        # set per session, so the factory's own listeners (the ledger's metric) still apply.
        self._prompt = isinstance(bind, Engine) and bind.dialect.name == "sqlite"
        if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
            self.read_factory = sessionmaker(
                bind=bind.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )

    def _call(self, fn: Callable[[Session], T], commit: bool) -> T:
        factory = self.session_factory if commit else self.read_factory
        with self._lock or contextlib.nullcontext(), factory() as session:
            if commit and self._prompt:
                session.connection(execution_options={SQLITE_PROMPT: True})
            try:
                result = fn(session)
                if commit:
                    session.commit()
                return result
            except BaseException:
                session.rollback()
                raise

    def run_inline(self, fn: Callable[[Session], T]) -> T | None:
        """``fn`` on the calling thread (the event loop) with a session that refuses any I/O:
        its result, or None the moment it wanted the database -- then nothing was done that
        needs undoing, and the caller runs it again with ``run``. A message that is pure CPU
        (an authenticated principal's, its data key cached) so skips the hop to a worker
        thread and back, and the GIL changing hands with it: about a quarter of the relay's
        CPU per message (benchmarks/relay.py)."""
        try:
            return fn(cast(Session, _NO_IO))
        except NeedsIO:
            return None

    async def run(self, fn: Callable[[Session], T], *, commit: bool = False) -> T:
        """``fn(session)`` in one of the relay's worker threads; ``commit``: it writes, commit
        when it returns."""
        return await self.in_thread(self._call, fn, commit)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the relay's worker threads (context variables carried)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="relay-db")
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Let the worker threads go once their work is done (``run`` makes new ones)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


class NeedsIO(BaseException):
    """Raised by the no-I/O session. A BaseException so that no ``except Exception`` on the
    way can take it for the code's own failure."""


class _NoIOSession:
    def __getattr__(self, name: str) -> Any:
        raise NeedsIO(name)


_NO_IO = _NoIOSession()


@dataclass(frozen=True)
class NewMessage:
    """A relay_messages row (column values) and its ledger entry, before delivery."""

    row: dict[str, Any]
    event: Event
    # Entries that go with the message, before its own (a stranger's, relay.strangers).
    before: tuple[Event, ...] = ()


@dataclass(frozen=True)
class StatusChange:
    """The outcome of a message still marked ``sending`` (a row already past it is left).

    ``row``: the message's relay_messages column values, as written by its ``NewMessage``.
    With it, the change shares one upsert with the batch's new rows instead of an UPDATE of
    its own (the row exists: the relay only delivers after its NewMessage committed)."""

    token: str
    status: str
    status_code: str | None = None
    event: Event | None = None
    row: dict[str, Any] | None = field(default=None, repr=False)


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
    at: float = 0.0  # loop time when queued (a lazy write waits at most lazy_delay from it)


def _upsert(session: Session, rows: list[dict[str, Any]], fresh: set[str]) -> None:
    """New rows and status rows in one statement. A status applies only to a row still
    ``sending`` (or ``unknown``: a reconcile gave up on it, but the relay that sent it learnt
    the answer after all): a bounce (relay/bounces.py, its own transaction) may already have
    marked it, and a lazily written "delivered" must not undo that. A new row never updates one: the
    tokens that come back show each was inserted, else IntegrityError as a plain INSERT."""
    written = set(
        session.execute(_upsert_statement(session.get_bind().dialect.name), rows).scalars()
    )
    if not fresh <= written:
        raise IntegrityError(
            "INSERT relay_messages", None, ValueError("relay message token already used")
        )


_UPSERTS: dict[str, Any] = {}


def _upsert_statement(dialect: str) -> Any:
    """The upsert of ``_upsert``, built once per dialect (on first use): a Core statement is
    immutable and safe to share; building it (the ``excluded`` table, its columns, the
    clauses) for every batch showed in the relay's profile on PostgreSQL."""
    stmt = _UPSERTS.get(dialect)
    if stmt is not None:
        return stmt
    ins: Any = pg_insert(_messages) if dialect == "postgresql" else sqlite_insert(_messages)
    stmt = ins.on_conflict_do_update(
        index_elements=[_messages.c.token],
        set_={
            "status": ins.excluded.status,
            "status_code": ins.excluded.status_code,
            "updated_at": ins.excluded.updated_at,
        },
        # No IN list: an expanding parameter cannot go in an executemany.
        where=((_messages.c.status == _OPEN[0]) | (_messages.c.status == _OPEN[1]))
        & (ins.excluded.status != "sending"),
    ).returning(_messages.c.token)
    _UPSERTS[dialect] = stmt
    return stmt


def _row(row: dict[str, Any]) -> dict[str, Any]:
    # One executemany needs the same keys in every row; rows built before the retry columns
    # (quarantine release, tests) have none.
    if "retry_key" in row and "attempts" in row:
        return row
    return {"retry_key": None, "attempts": 1, **row}


def apply_writes(
    session: Session,
    writes: Sequence[Write],
    ledger: Ledger,
    *,
    check_retries: bool = False,
) -> dict[str, str]:
    """Everything in ``writes``, in the caller's transaction (does not commit).

    ``check_retries``: a new message whose ``retry_key`` names a deferred or unknown row is
    that message's retry: the row is taken over and no second ``message`` entry is written
    (``reconcile``). Returns new token -> the token of the row each retry took over."""
    rows = {w.row["token"]: _row(w.row) for w in writes if isinstance(w, NewMessage)}
    retried = take_over_retries(session, rows) if check_retries and rows else {}
    for token in retried:
        del rows[token]
    fresh = set(rows)
    merge = session.get_bind().dialect.name in ("sqlite", "postgresql")
    now = utcnow()
    by_status: dict[tuple[str, str | None], list[str]] = {}
    for w in writes:
        if not isinstance(w, StatusChange):
            continue
        if merge and w.row is not None and w.token not in fresh:
            rows[w.token] = {
                **_row(w.row),
                "status": w.status,
                "status_code": w.status_code,
                "updated_at": now,
            }
        else:
            by_status.setdefault((w.status, w.status_code), []).append(w.token)
    if rows and merge:
        _upsert(session, list(rows.values()), fresh)
    elif rows:
        session.execute(insert(_messages), list(rows.values()))
    for (status, code), tokens in by_status.items():
        # Only from "sending" or "unknown" (see _upsert).
        session.execute(
            update(_messages)
            .where(_messages.c.token.in_(tokens), _messages.c.status.in_(_OPEN))
            .values(status=status, status_code=code, updated_at=now)
        )
    events: list[Event] = []
    for w in writes:
        if isinstance(w, NewMessage):
            if w.row["token"] in retried:
                continue  # its entries were written with its first attempt
            events.extend(w.before)
        if not isinstance(w, _Wake) and w.event is not None:
            events.append(w.event)
    if events:
        ledger.append(session, events)
    return retried


def apply_batch(
    session: Session,
    items: Sequence[Item],
    ledger: Ledger,
    *,
    check_retries: bool = False,
) -> tuple[dict[str, Route], dict[str, str]]:
    """The writes, then one query for every lookup, in the caller's transaction (does not
    commit): the routes looked up and the retries taken over (``apply_writes``). Writing
    first takes SQLite's write lock before the read, so the transaction never has to turn a
    read snapshot into a write one (which fails if another process wrote)."""
    writes = [i for i in items if not isinstance(i, Lookup)]
    retried = apply_writes(session, writes, ledger, check_retries=check_retries)
    addresses = [i.address for i in items if isinstance(i, Lookup)]
    return (lookup_routes(session, addresses) if addresses else {}), retried


class GroupCommit:
    """Group-committing database worker; ``start`` it on the event loop that uses it."""

    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        *,
        max_batch: int = MAX_BATCH,
        lazy_delay: float = LAZY_DELAY,
        gather: float = GATHER,
        gather_items: int = GATHER_ITEMS,
        senders: Callable[[], int] | None = None,
    ) -> None:
        self.gather = gather
        self.gather_items = gather_items
        self.senders = senders
        self._held: list[_Pending] = []  # lazy writes kept for a batch that writes rows
        self.db = db
        self.ledger = ledger
        self.max_batch = max_batch
        self.lazy_delay = lazy_delay
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0
        self.lookups = 0
        # Until this loop time, new messages are checked for being retries (reconcile).
        self._retries_until = 0.0

    def expect_retries(self, seconds: float) -> None:
        """Check new messages for retries of deferred/unknown ones for ``seconds`` from now
        (after a deferral here, or a reconcile that saw retryable rows)."""
        loop = asyncio.get_running_loop()
        self._retries_until = max(self._retries_until, loop.time() + seconds)

    def stop_expecting_retries(self) -> None:
        self._retries_until = 0.0

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="relay-journal")

    async def write(self, w: Write) -> None:
        """Queue ``w`` and return once it is committed (or raise why it was not)."""
        await self.submit(w)

    async def record(self, w: NewMessage) -> str:
        """``write`` for a new message; the token of its row (a retry's is its first
        attempt's, see ``apply_writes``)."""
        token: str = await self.submit(w)
        return token

    async def lookup(self, address: str) -> Route | None:
        """The route for ``address`` (see ``routes``), read in the next batch's transaction."""
        if self._queue is None:
            raise RuntimeError("journal not started")
        key = address.strip().lower()
        if self.senders is not None and self.senders() <= 1:
            # One SMTP connection: no other item to share a transaction with, so a read of its
            # own (one round trip in autocommit on PostgreSQL) instead of waiting behind the
            # writer's commit of the previous message's lazy status.
            found = await self.db.run(lambda s: lookup_routes(s, [key]).get(key))
            self.lookups += 1
            return found
        done: asyncio.Future[Route | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(Lookup(key), done))
        result: Route | None = await done
        return result

    def submit(self, w: Write, *, lazy: bool = False) -> asyncio.Future[Any]:
        """Queue ``w``; the future resolves when it is committed. A failure nobody awaits is
        logged (by kind, never content).

        ``lazy``: nobody waits for it, so when only lazy writes are queued the writer waits up
        to ``lazy_delay`` seconds for a write someone does wait for and commits them together
        (a delivered status rides on the next message's commit instead of paying for one)."""
        if self._queue is None:
            raise RuntimeError("journal not started")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_log_unawaited_failure)
        self._queue.put_nowait(_Pending(w, done, lazy, asyncio.get_running_loop().time()))
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
            batch = await self._gather(queue)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _gather(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        """The next batch. Lazy writes wait (up to ``lazy_delay``) for a batch that writes
        message rows anyway, so their upsert costs no statement of its own; the others wait
        up to ``gather`` seconds for other connections' items (group commit)."""
        loop = asyncio.get_running_loop()

        def drain(batch: list[_Pending]) -> None:
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())

        async def get(timeout: float | None) -> _Pending | None:
            if timeout is None:
                return await queue.get()
            try:
                return await asyncio.wait_for(queue.get(), max(0.0, timeout))
            except TimeoutError:
                return None

        batch, self._held = self._held, []
        while not any(not p.lazy for p in batch):
            item = await get(batch[0].at + self.lazy_delay - loop.time() if batch else None)
            if item is None:
                return batch  # lazy writes due: they go alone
            batch.append(item)
            drain(batch)
        target = min(self.gather_items, self.senders() if self.senders else 1)
        if self.gather > 0 and target > 1:
            deadline = loop.time() + self.gather
            # A batch without message rows (lookups only) waits the whole window for one:
            # the transaction it would cost alone is most of a message's round trips.
            while len(batch) < self.max_batch and (
                sum(not p.lazy for p in batch) < target or not any(map(_writes_rows, batch))
            ):
                item = await get(deadline - loop.time())
                if item is None:
                    break
                batch.append(item)
                drain(batch)
        if not any(_writes_rows(p) or isinstance(p.item, _Wake) for p in batch):
            now = loop.time()
            self._held = [p for p in batch if p.lazy and p.at + self.lazy_delay > now]
            if self._held:
                batch = [p for p in batch if not (p.lazy and p.at + self.lazy_delay > now)]
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        for pending in [p for p in batch if isinstance(p.item, _Wake)]:
            _settle(pending.done, None)
        batch = [p for p in batch if not isinstance(p.item, _Wake)]
        if not batch:
            return
        try:
            result = await self.db.run(self._batch([p.item for p in batch]), commit=True)
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
            _settle(pending.done, None, _answer(pending.item, result))

    def _batch(
        self, items: list[Item]
    ) -> Callable[[Session], tuple[dict[str, Route], dict[str, str]]]:
        check = asyncio.get_running_loop().time() < self._retries_until
        return lambda s: apply_batch(s, items, self.ledger, check_retries=check)


def _writes_rows(pending: _Pending) -> bool:
    item = pending.item
    if isinstance(item, NewMessage):
        return True
    return isinstance(item, StatusChange) and item.row is not None and not pending.lazy


def _answer(item: Item, result: tuple[dict[str, Route], dict[str, str]]) -> Any:
    routes, retried = result
    if isinstance(item, Lookup):
        return routes.get(item.address)
    if isinstance(item, NewMessage):
        token = item.row["token"]
        return retried.get(token, token)
    return None


def _log_unawaited_failure(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("relay journal: write failed (%s)", type(done.exception()).__name__)


def _settle(done: asyncio.Future[Any], exc: BaseException | None, result: Any = None) -> None:
    if done.done():  # the waiter was cancelled (client went away): nothing to tell
        return
    if exc is None:
        done.set_result(result)
    else:
        done.set_exception(exc)


# The name relay.server still uses (changed apart from this module, with the server's own work).
Journal = GroupCommit

__all__ = [
    "Database",
    "GroupCommit",
    "Journal",
    "LedgerOnly",
    "Lookup",
    "NewMessage",
    "StatusChange",
    "Write",
    "apply_batch",
    "apply_writes",
]
