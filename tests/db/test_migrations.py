"""Migrations from empty to head (and back) on SQLite and PostgreSQL, and no drift between
the models and what the migrations build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from dbkit import private_pg_engine
from mailveil.db.migrate import current_revision, downgrade, head_revision, upgrade
from mailveil.db.models import Base
from mailveil.db.session import make_engine


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_available: bool
) -> Iterator[Engine]:
    """A database with nothing in it, private to this test."""
    if request.param == "sqlite":
        eng = make_engine(url=f"sqlite:///{tmp_path / 'm.db'}")
        yield eng
        eng.dispose()
        return
    if not _pg_available:
        pytest.skip("PostgreSQL not reachable")
    with private_pg_engine("mv_mig") as eng:
        yield eng


def test_there_is_a_head_revision() -> None:
    assert head_revision() is not None


def test_empty_to_head_builds_every_table(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()
    tables = set(inspect(empty_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_upgrade_is_idempotent(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()


def test_models_and_migrations_agree(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert diffs == []


def test_downgrade_to_base_and_up_again(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    downgrade(empty_engine, "base")
    left = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
    assert left == set()
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()
