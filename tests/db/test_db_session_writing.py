"""``writing``: a session that has read starts its next write as SQLite's writer up front.
In WAL mode a deferred transaction that has read cannot become a writer once another
connection has committed (SQLITE_BUSY_SNAPSHOT: "database is locked" at once, the busy
timeout does not apply). The notification worker reads, then renews its lease, while the
relay commits beside it; this is the failure it hit under load (issue 17)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, insert, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailveil.config import Settings, SettingsError
from mailveil.config.checks import check_settings
from mailveil.db.session import SQLITE_PROMPT, make_engine, make_session_factory, writing
from mailveil.relay.journal import Database

META = MetaData()
COUNTER = Table("counter", META, Column("id", Integer, primary_key=True), Column("n", Integer))


@pytest.fixture
def sessions(tmp_path: Path) -> tuple[Session, Session]:
    engine = make_engine(url=f"sqlite:///{tmp_path / 'w.db'}")
    META.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(COUNTER).values(id=1, n=0))
    factory = make_session_factory(engine)
    return factory(), factory()


def _read_then_other_commits(reader: Session, other: Session) -> None:
    assert reader.scalar(select(COUNTER.c.n)) == 0  # the reader's snapshot starts here
    other.execute(update(COUNTER).values(n=COUNTER.c.n + 1))
    other.commit()


def test_a_deferred_read_then_write_fails_at_once_after_another_commit(
    sessions: tuple[Session, Session],
) -> None:
    """The premise: without ``writing`` the write fails, whatever the busy timeout."""
    reader, other = sessions
    _read_then_other_commits(reader, other)
    with pytest.raises(OperationalError, match="database is locked"):
        reader.execute(update(COUNTER).values(n=COUNTER.c.n + 10))
    reader.rollback()


def test_writing_commits_the_read_and_takes_the_write_lock_first(
    sessions: tuple[Session, Session],
) -> None:
    reader, other = sessions
    _read_then_other_commits(reader, other)
    writing(reader)
    reader.execute(update(COUNTER).values(n=COUNTER.c.n + 10))
    reader.commit()
    assert other.scalar(select(COUNTER.c.n)) == 11  # both writes, none lost
    other.rollback()


def _prompt_session(path: Path, busy_ms: int) -> tuple[Session, Session]:
    engine = make_engine(url=f"sqlite:///{path}", sqlite_busy_ms=busy_ms)
    META.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(COUNTER).values(id=1, n=0))
    prompt = Session(bind=engine.execution_options(**{SQLITE_PROMPT: True}))
    return prompt, make_session_factory(engine)()


def _busy_timeout(s: Session) -> int:
    return int(s.connection().exec_driver_sql("PRAGMA busy_timeout").scalar_one())


def test_a_prompt_writer_waits_for_the_lock_and_takes_it_once_released(tmp_path: Path) -> None:
    prompt, holder = _prompt_session(tmp_path / "p.db", busy_ms=30_000)
    writing(holder)
    holder.execute(update(COUNTER).values(n=COUNTER.c.n + 1))
    released = threading.Timer(0.3, holder.commit)
    released.start()
    prompt.execute(update(COUNTER).values(n=COUNTER.c.n + 10))  # waits, then goes
    released.join()
    assert _busy_timeout(prompt) == 30_000  # the engine's own wait is back for later work
    prompt.commit()
    assert holder.scalar(select(COUNTER.c.n)) == 11


def test_a_prompt_writer_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    prompt, holder = _prompt_session(tmp_path / "p.db", busy_ms=300)
    writing(holder)
    holder.execute(update(COUNTER).values(n=5))
    with pytest.raises(OperationalError, match="database is locked"):
        prompt.execute(update(COUNTER).values(n=COUNTER.c.n + 10))
    prompt.rollback()
    holder.commit()
    assert _busy_timeout(prompt) == 300
    prompt.rollback()
    assert holder.scalar(select(COUNTER.c.n)) == 5  # the holder's write, nothing lost


def test_the_relay_s_writes_on_sqlite_begin_promptly(tmp_path: Path) -> None:
    engine = make_engine(url=f"sqlite:///{tmp_path / 'r.db'}")
    factory = make_session_factory(engine)
    begun: list[bool] = []
    event.listen(engine, "begin", lambda c: begun.append(bool(
        c.get_execution_options().get(SQLITE_PROMPT))))  # fmt: skip
    committed: list[Session] = []
    event.listen(factory, "after_commit", committed.append)  # the factory's own listeners
    db = Database(factory)
    db._call(lambda s: s.execute(text("SELECT 1")), commit=True)
    db._call(lambda s: s.execute(text("SELECT 1")), commit=False)
    assert begun == [True, False]  # writes promptly, reads as before
    assert len(committed) == 1
    engine.dispose()


def test_each_sqlite_connection_s_page_cache_is_the_setting(tmp_path: Path) -> None:
    """sqlite_cache_mib sizes every pooled connection's page cache (a process holds several:
    its memory can grow by about this much per connection as the database grows)."""
    settings = Settings(data_dir=tmp_path, sqlite_cache_mib=8)
    engine = make_engine(settings)
    with engine.connect() as first, engine.connect() as second:
        for conn in (first, second):
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -8 * 1024
    default = make_engine(url=f"sqlite:///{tmp_path / 'd.db'}")
    with default.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -64 * 1024
    with pytest.raises(SettingsError, match="sqlite_cache_mib"):
        check_settings(Settings(data_dir=tmp_path, sqlite_cache_mib=0))
