"""Property: any single change, deletion, insertion or reordering of ledger rows in the
database is caught by verify_ledger, which names the right first bad seq. Runs on SQLite and
PostgreSQL; every example works in a savepoint that is rolled back.

The attacker may switch off the database's own seq check first (``checks_bypassed``), so the
verifier, not the constraint, has to catch renumbered and copied rows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from ledger_testkit import (
    apply_mutation,
    checks_bypassed,
    fill,
    hash_of,
    leaf_of,
    mutations,
    signer_for,
    verify,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.ledger.signing import CheckpointSigner

N = 40  # entries; checkpoints at 16 and 32 (settings fixture)


@dataclass
class Ledger:
    signer: CheckpointSigner
    leaves: list[str]
    hashes: list[bytes]


@pytest.fixture
def ledger(session: Session, settings: Settings) -> Iterator[Ledger]:
    signer = signer_for(settings)
    fill(session, settings, signer, N)
    session.commit()  # a savepoint: the test's outer transaction still rolls it all back
    conn = session.connection()
    yield Ledger(
        signer,
        [leaf_of(conn, i) for i in range(N)],
        [hash_of(conn, i) for i in range(N)],
    )


@hsettings(
    max_examples=int(os.environ.get("LEDGER_TAMPER_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=mutations(N), batch=st.sampled_from([4, 7, 16, 100]))
def test_any_single_tampering_is_caught_and_named(
    session: Session, settings: Settings, ledger: Ledger, mutation: tuple[Any, ...], batch: int
) -> None:
    conn = session.connection()
    nested = conn.begin_nested()
    try:
        with checks_bypassed(conn):
            try:
                expected = apply_mutation(conn, ledger.leaves, ledger.hashes, N, mutation)
            except DBAPIError:
                nested.rollback()
                reject()  # the database itself refused the change
            report = verify(session, settings, ledger.signer, batch=batch)
        assert not report.ok, mutation
        assert report.first_bad_seq in expected, (mutation, report.reason)
    finally:
        if nested.is_active:
            nested.rollback()


def test_the_fixture_ledger_is_intact(session: Session, settings: Settings, ledger: Ledger) -> None:
    assert verify(session, settings, ledger.signer, batch=7).ok
    assert ledger.hashes[1] == hashlib.sha256(b"\x00" + ledger.leaves[1].encode()).digest()
