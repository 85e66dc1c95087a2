"""Verification split over two processes gives exactly the answers of a single pass.

The worker reads committed data through its own connection, so these tests work on
committed ledgers: a fresh copy of a SQLite file per example, and on PostgreSQL a committed
ledger that is wiped afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from ledger_testkit import (
    apply_mutation,
    checks_bypassed,
    edit_leaf,
    fill,
    hash_of,
    leaf_of,
    mutations,
    set_row,
    signer_for,
)
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailveil.config import Settings, load_settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine
from mailveil.ledger.append import ledger_size
from mailveil.ledger.signing import CheckpointSigner
from mailveil.ledger.verify import VerifyReport, verify_ledger

pytestmark = pytest.mark.slow  # verification over two processes

N = 70  # checkpoints at 16, 32, 48, 64
_SPOIL_NOTE = "UPDATE ledger_checkpoints SET note = note || ' ' WHERE tree_size = %s"


@dataclass
class Pristine:
    path: Path
    signer: CheckpointSigner
    leaves: list[str]
    hashes: list[bytes]
    size: int


def _build(root: Path, n: int, every: int = 16) -> Pristine:
    settings = load_settings(env={}, data_dir=root / "var", checkpoint_every_entries=every)
    signer = signer_for(settings)
    engine = make_engine(settings)
    upgrade(engine)
    with Session(engine) as session, session.begin():
        fill(session, settings, signer, n)
        conn = session.connection()
        leaves = [leaf_of(conn, i) for i in range(n)]
        hashes = [hash_of(conn, i) for i in range(n)]
    engine.dispose()
    path = root / "var" / "mailveil.db"
    with sqlite3.connect(path) as lite:
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file to copy
    return Pristine(path, signer, leaves, hashes, n)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return _build(tmp_path_factory.mktemp("split"), N)


@pytest.fixture(scope="module")
def pristine_wide(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return _build(tmp_path_factory.mktemp("split-wide"), 600, every=100)


def _copy(p: Pristine, where: Path) -> tuple[Settings, Engine]:
    settings = load_settings(env={}, data_dir=where / "var", checkpoint_every_entries=16)
    settings.data_dir.mkdir(parents=True)
    shutil.copy(p.path, settings.data_dir / "mailveil.db")
    return settings, make_engine(settings)


def _both(
    engine: Engine, settings: Settings, signer: CheckpointSigner, at: int, batch: int
) -> tuple[VerifyReport, VerifyReport]:
    one = verify_ledger(engine, settings, signer.public_key, batch=batch, split=False)
    two = verify_ledger(engine, settings, signer.public_key, batch=batch, split=at)
    assert (one.processes, two.processes) == (1, 2)
    return one, two


def _same(one: VerifyReport, two: VerifyReport) -> None:
    assert (one.ok, one.first_bad_seq, one.bad_checkpoint) == (
        two.ok, two.first_bad_seq, two.bad_checkpoint,
    ), (one.reason, two.reason)  # fmt: skip
    if one.ok:
        assert (one.root, one.entries, one.checkpoints, one.nodes) == (
            two.root, two.entries, two.checkpoints, two.nodes,
        )  # fmt: skip


@pytest.mark.parametrize("at", [1, 2, 7, 15, 16, 17, 33, 48, 63, 64, 69])
def test_intact_ledger_split_anywhere(pristine: Pristine, tmp_path: Path, at: int) -> None:
    settings, engine = _copy(pristine, tmp_path)
    seen: list[int] = []
    try:
        one, two = _both(engine, settings, pristine.signer, at, 5)
        two_again = verify_ledger(
            engine, settings, pristine.signer.public_key, progress=seen.append, batch=5, split=at
        )
    finally:
        engine.dispose()
    assert one.ok and two.ok and two_again.ok, two.problems
    _same(one, two)
    assert seen[-1] == N and seen == sorted(seen)


@hsettings(
    max_examples=int(os.environ.get("LEDGER_SPLIT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mutation=mutations(N),
    at=st.integers(1, N - 1),
    batch=st.sampled_from([4, 7, 16]),
)
def test_split_names_the_same_first_bad_entry(
    pristine: Pristine,
    tmp_path_factory: pytest.TempPathFactory,
    mutation: tuple[object, ...],
    at: int,
    batch: int,
) -> None:
    settings, engine = _copy(pristine, tmp_path_factory.mktemp("ex"))
    try:
        try:
            with engine.begin() as conn, checks_bypassed(conn):
                expected = apply_mutation(conn, pristine.leaves, pristine.hashes, N, mutation)
        except DBAPIError:
            reject()
        one, two = _both(engine, settings, pristine.signer, at, batch)
    finally:
        engine.dispose()
    assert not one.ok and one.first_bad_seq in expected, (mutation, one.reason)
    _same(one, two)


@pytest.mark.parametrize("at", [10, 25, 40, 60])
def test_consistent_rewrite_is_caught_across_the_split(
    pristine: Pristine, tmp_path: Path, at: int
) -> None:
    settings, engine = _copy(pristine, tmp_path)
    try:
        with engine.begin() as conn:
            prev = hash_of(conn, 19)
            for seq in range(20, N):
                leaf = edit_leaf(leaf_of(conn, seq), "prev", prev.hex())
                if seq == 20:
                    leaf = edit_leaf(leaf, "ref", "order:forged")
                prev = hashlib.sha256(b"\x00" + leaf.encode()).digest()
                set_row(conn, seq, leaf, prev)
        one, two = _both(engine, settings, pristine.signer, at, 6)
    finally:
        engine.dispose()
    assert (one.first_bad_seq, one.bad_checkpoint) == (16, 32), one.reason
    _same(one, two)


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "UPDATE ledger_nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 1",
        "DELETE FROM ledger_nodes WHERE level = 8 AND idx = 1",
        "UPDATE ledger_head SET frontier = zeroblob(64)",
        "UPDATE ledger_checkpoints SET note = note || ' ' WHERE tree_size = 500",
    ],
)
def test_tiles_and_head_across_the_split(pristine_wide: Pristine, tmp_path: Path, sql: str) -> None:
    settings, engine = _copy(pristine_wide, tmp_path)
    settings = settings.with_overrides(checkpoint_every_entries=100)
    try:
        if sql:
            with engine.begin() as conn:
                conn.exec_driver_sql(sql)
        # 300 splits the 256-leaf subtree [256, 512): only the join can check that node.
        one, two = _both(engine, settings, pristine_wide.signer, 300, 64)
    finally:
        engine.dispose()
    assert one.ok == (sql == ""), one.problems
    _same(one, two)
    if not sql:
        assert one.nodes == two.nodes == 2


@pytest.fixture
def committed_pg(engine: Engine, settings: Settings) -> Iterator[tuple[Engine, CheckpointSigner]]:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL variant; SQLite is covered above")
    with Session(engine) as probe:
        if ledger_size(probe):
            pytest.skip("the shared ledger is not empty")
    signer = signer_for(settings)
    try:
        with Session(engine) as session, session.begin():
            fill(session, settings, signer, N)
        yield engine, signer
    finally:
        with engine.begin() as conn:
            for table in ("ledger_entries", "ledger_checkpoints", "ledger_nodes", "ledger_head"):
                conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608


def test_split_on_postgres(
    committed_pg: tuple[Engine, CheckpointSigner], settings: Settings
) -> None:
    engine, signer = committed_pg
    one, two = _both(engine, settings, signer, 30, 8)
    assert one.ok and two.ok, two.problems
    _same(one, two)
    with engine.begin() as conn:
        set_row(conn, 50, leaf_hash=bytes(32))
        conn.exec_driver_sql(
            "UPDATE ledger_checkpoints SET note = note || ' ' WHERE tree_size = 64"
        )
    one, two = _both(engine, settings, signer, 30, 8)
    assert one.first_bad_seq == 50 and one.bad_checkpoint is None
    _same(one, two)
    with engine.begin() as conn:
        good = hashlib.sha256(b"\x00" + leaf_of(conn, 50).encode()).digest()
        set_row(conn, 50, leaf_hash=good)
        conn.exec_driver_sql(
            "UPDATE ledger_checkpoints SET note = note || ' ' WHERE tree_size = 48"
        )
    one, two = _both(engine, settings, signer, 30, 8)
    assert one.bad_checkpoint == 48 and one.first_bad_seq is None
    _same(one, two)
