"""CLI fixtures: a private data directory per test, the developer's settings kept out."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_testkit import Cli, open_db, tokens
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.db.session import make_engine

# Test-harness variables, not settings: kept.
HARNESS_VARS = {"MAILVEIL_TEST_PG_URL", "MAILVEIL_REQUIRE_POSTGRES", "MAILVEIL_SHARED_DIR"}
PG_URL = os.environ.get("MAILVEIL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No MAILVEIL_* variable and no ./mailveil.toml of the developer's reach a test."""
    for name in list(os.environ):
        if name.startswith("MAILVEIL_") and name not in HARNESS_VARS:
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """`mailveil --data-dir <tmp>/var`, not yet initialised."""
    return Cli(tmp_path / "var")


@pytest.fixture
def admin_token(cli: Cli) -> str:
    """Run `mailveil init`; the bootstrap admin token it printed."""
    run = cli.ok("init")
    found = tokens(run.stdout)
    assert len(found) == 1, str(run)
    return found[0]


@pytest.fixture
def cli_settings(cli: Cli, admin_token: str) -> Settings:
    """Settings equal to the ones the (initialised) CLI uses."""
    return cli.settings()


@pytest.fixture
def db(cli_settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the CLI's database, for set-up through the contacts functions and checks."""
    with open_db(cli_settings) as factory:
        yield factory


@pytest.fixture(params=["sqlite", "postgres"])
def any_backend_cli(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_available: bool
) -> Iterator[Cli]:
    """The CLI on SQLite (its data directory) or on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield Cli(tmp_path / "var")
        return
    if not _pg_available:
        pytest.skip("PostgreSQL not reachable")
    schema = f"mv_cli_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url=PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Cli(tmp_path / "var", database_url=f"{PG_URL}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
