"""``writing``: a session that has read starts its next write as SQLite's writer up front.
In WAL mode a deferred transaction that has read cannot become a writer once another
connection has committed (SQLITE_BUSY_SNAPSHOT: "database is locked" at once, the busy
timeout does not apply). The notification worker reads, then renews its lease, while the
relay commits beside it; this is the failure it hit under load (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailveil.db.session import make_engine, make_session_factory, writing

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
