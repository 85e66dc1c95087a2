"""Engines and sessions. Built from settings on demand, never at import time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings

# Execution option: start transactions with BEGIN IMMEDIATE (take SQLite's write lock first,
# waiting up to the busy timeout). A deferred transaction that reads and then writes fails at
# once with "database is locked" when another writer committed in between; an immediate one
# waits its turn instead.
SQLITE_IMMEDIATE = "mailveil_sqlite_immediate"
DEFAULT_SQLITE_BUSY_MS = 30_000
DEFAULT_SQLITE_CACHE_MIB = 64


def _sqlite_connect_with(busy_ms: int, cache_mib: int) -> Any:
    def listener(dbapi_connection: Any, record: Any) -> None:
        _sqlite_connect(dbapi_connection, record, busy_ms, cache_mib)

    return listener


def _sqlite_connect(
    dbapi_connection: Any,
    _record: Any,
    busy_ms: int = DEFAULT_SQLITE_BUSY_MS,
    cache_mib: int = DEFAULT_SQLITE_CACHE_MIB,
) -> None:
    # Let SQLAlchemy, not pysqlite, issue BEGIN so SAVEPOINT works (SQLAlchemy's documented
    # recipe). WAL lets the API read while the relay writes; foreign keys are off by default.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # SQLite's default page cache is 2 MiB; the random-keyed alias and blind-index B-trees
    # outgrow it quickly and every commit then rewrites pages it just evicted
    # (sqlite_cache_mib; a negative cache_size is in KiB).
    cursor.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
    cursor.close()


# Execution option: BEGIN IMMEDIATE, retried every half millisecond instead of through
# SQLite's busy handler, whose sleeps grow to 100 ms each: beside a stream of other writers
# (the API under load) a waiter on that schedule kept losing the lock to them, and the
# relay's commits waited over a second (benchmarks/relay_mixed.py). The relay's writes.
SQLITE_PROMPT = "mailveil_sqlite_prompt"
_PROMPT_RETRY_SECONDS = 0.0005


def _begin_promptly(connection: Connection) -> None:
    raw = connection.connection.dbapi_connection
    assert raw is not None
    (busy_ms,) = raw.execute("PRAGMA busy_timeout").fetchone()
    deadline = time.monotonic() + busy_ms / 1000
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:  # (SQLAlchemy's, as any statement's failure)
                if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                    raise
            time.sleep(_PROMPT_RETRY_SECONDS)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(busy_ms)}")


def _sqlite_begin(connection: Connection) -> None:
    options = connection.get_execution_options()
    if options.get(SQLITE_PROMPT):
        _begin_promptly(connection)
    elif options.get(SQLITE_IMMEDIATE):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def make_engine(
    settings: Settings | None = None,
    url: str | None = None,
    *,
    sqlite_busy_ms: int = DEFAULT_SQLITE_BUSY_MS,
    **kwargs: Any,
) -> Engine:
    target = url or (settings.db_url if settings else None)
    if not target:
        raise ValueError("make_engine needs settings or a url")
    if target.startswith("sqlite"):
        if settings is not None and target == settings.db_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        engine = create_engine(target, **kwargs)
        cache_mib = settings.sqlite_cache_mib if settings else DEFAULT_SQLITE_CACHE_MIB
        event.listen(engine, "connect", _sqlite_connect_with(sqlite_busy_ms, cache_mib))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if target.startswith("postgresql://"):
        target = "postgresql+psycopg://" + target[len("postgresql://") :]
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(target, **kwargs)


def make_session_factory(bind: Engine | Connection) -> sessionmaker[Session]:
    return sessionmaker(bind=bind, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def writing(s: Session) -> None:
    """End ``s``'s transaction (committing it) and start the next as a writer: on SQLite
    BEGIN IMMEDIATE, which waits its turn for the write lock. A deferred one that has read
    fails at once ("database is locked", no busy wait applies) if another connection commits
    before its first write, which a relay working beside a notification worker does all the
    time. On PostgreSQL only the commit."""
    if s.in_transaction():
        s.commit()
    bind = s.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        s.connection(execution_options={SQLITE_IMMEDIATE: True})


def write_session_factory(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for work that reads then writes while other processes write (API requests,
    the alert pump): on SQLite they begin IMMEDIATE, waiting their turn for the write lock
    instead of failing at once with "database is locked" when another writer commits
    between their read and their write.

    A factory bound to a connection (tests' rolled-back transactions) is returned as it is.
    """
    bind = factory.kw.get("bind")
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        return sessionmaker(
            bind=bind.execution_options(**{SQLITE_IMMEDIATE: True}),
            expire_on_commit=factory.kw.get("expire_on_commit", True),
        )
    return factory
