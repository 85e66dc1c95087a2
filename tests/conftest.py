"""Shared fixtures: a database per backend, each test's work rolled back through a savepoint.

Every test that takes ``session`` (or ``engine``) runs on SQLite and, when the server is
reachable, on PostgreSQL (127.0.0.1:5432, database ``test``). CI sets
MAILVEIL_REQUIRE_POSTGRES=1 so an unreachable server fails instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dbkit import PG_URL, private_pg_engine
from mailveil.config import Settings, load_settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine

# The whole suite's log scan (logscan.py) and the measured fast subset (durations.py).
pytest_plugins = ["logscan", "durations"]


def _postgres_reachable() -> bool:
    try:
        engine = make_engine(url=PG_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def _pg_available() -> bool:
    ok = _postgres_reachable()
    if not ok and os.environ.get("MAILVEIL_REQUIRE_POSTGRES") == "1":
        pytest.fail("PostgreSQL is required (MAILVEIL_REQUIRE_POSTGRES=1) but unreachable")
    return ok


@pytest.fixture(scope="session", params=BACKENDS)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, _pg_available: bool
) -> Iterator[Engine]:
    """A migrated database for the whole run, one per backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "mailveil.db"
        eng = make_engine(url=f"sqlite:///{path}")
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    if not _pg_available:
        pytest.skip("PostgreSQL not reachable")
    with private_pg_engine("mv_test") as eng:
        upgrade(eng)
        yield eng


@pytest.fixture(params=BACKENDS)
def own_engine(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_available: bool
) -> Iterator[Engine]:
    """A migrated database private to one test, for work that commits for real (races,
    subprocesses, jobs that read through their own connections)."""
    if request.param == "sqlite":
        eng = make_engine(url=f"sqlite:///{tmp_path / 'own.db'}")
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    if not _pg_available:
        pytest.skip("PostgreSQL not reachable")
    with private_pg_engine("mv_own") as eng:
        upgrade(eng)
        yield eng


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """One connection in an outer transaction that is rolled back after the test."""
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        if outer.is_active:
            outer.rollback()
        conn.close()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    """Sessions whose commits become savepoints inside the test's outer transaction."""
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    sess = session_factory()
    try:
        yield sess
    finally:
        sess.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a private data directory (keys, logs) for one test."""
    return load_settings(env={}, data_dir=tmp_path / "var", checkpoint_every_entries=16)
