"""Property: any single change, deletion, insertion or reordering of ledger rows in the
database is caught by verify_ledger, which names the right first bad seq. Runs on SQLite and
PostgreSQL; every example works in a savepoint that is rolled back.

The attacker may switch off the database's own seq check first (``checks_bypassed``), so the
verifier, not the constraint, has to catch renumbered and copied rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from ledger_testkit import (
    checks_bypassed,
    fill,
    forged_leaf,
    hash_of,
    insert_row,
    leaf_of,
    renumber,
    set_row,
    signer_for,
    verify,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.ledger.leaf import GENESIS_PREV
from mailveil.ledger.signing import CheckpointSigner

N = 40  # entries; checkpoints at 16 and 32 (settings fixture), read in batches of 7

_chars = st.characters(codec="utf-8", exclude_characters="\x00")
_text = st.text(alphabet=_chars, max_size=12)
_values: dict[str, st.SearchStrategy[Any]] = {
    "prev": st.binary(min_size=32, max_size=32).map(bytes.hex),
    "seq": st.integers(-(2**40), 2**40),
    "time_us": st.integers(0, 2**62),
    "kind": _text.filter(bool),
    "actor": st.none() | _text,
    "subject": st.none() | _text,
    "alias": st.none() | _text,
    "purpose": st.none() | _text,
    "ref": st.none() | _text,
    "detail": st.dictionaries(_text, st.integers() | _text | st.booleans(), max_size=3),
}
_index = st.integers(0, N - 1)

mutations = st.one_of(
    st.tuples(st.just("edit"), _index, st.sampled_from(sorted(_values))).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), _values[t[2]])
    ),
    st.tuples(st.just("respace"), _index),
    st.tuples(st.just("hash"), _index, st.binary(min_size=0, max_size=40)),
    st.tuples(st.just("move"), _index, st.integers(N, N + 100) | st.integers(-100, -1)),
    st.tuples(st.just("delete"), _index),
    st.tuples(st.just("insert"), st.integers(0, N), st.none() | _index),
    st.tuples(st.just("swap"), _index, _index).filter(lambda t: t[1] != t[2]),
)


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


def _apply(session: Session, led: Ledger, mutation: tuple[Any, ...]) -> set[int]:
    """Make the change; return the seqs verify may rightly name (one, or two when a row was
    duplicated next to itself: then either twin is "the" inserted one)."""
    conn = session.connection()
    kind, k = mutation[0], mutation[1]
    if kind == "edit":
        field, value = mutation[2], mutation[3]
        body = json.loads(led.leaves[k])
        if body[field] == value:
            reject()
        body[field] = value
        set_row(conn, k, leaf=json.dumps(body, separators=(",", ":")))
        return {k}
    if kind == "respace":
        set_row(conn, k, leaf=led.leaves[k].replace(",", ", ", 1))
        return {k}
    if kind == "hash":
        if mutation[2] == led.hashes[k]:
            reject()
        set_row(conn, k, leaf_hash=mutation[2])
        return {k}
    if kind == "move":
        renumber(conn, k, mutation[2])
        return {k}
    if kind == "delete":
        conn.exec_driver_sql(f"DELETE FROM ledger_entries WHERE seq = {int(k)}")  # noqa: S608
        return {k}
    if kind == "insert":
        copy = mutation[2]
        for seq in range(N - 1, k - 1, -1):
            renumber(conn, seq, seq + 1)
        if copy is None:
            prev = led.hashes[k - 1] if k else GENESIS_PREV
            leaf, digest = forged_leaf(prev, k)
        else:
            leaf, digest = led.leaves[copy], led.hashes[copy]
        insert_row(conn, k, leaf, digest)
        if copy is not None and copy in (k - 1, k):
            return {copy, copy + 1}  # twins side by side
        return {k}
    assert kind == "swap"
    i, j = sorted((mutation[1], mutation[2]))
    set_row(conn, i, led.leaves[j], led.hashes[j])
    set_row(conn, j, led.leaves[i], led.hashes[i])
    return {i}


@hsettings(
    max_examples=int(os.environ.get("LEDGER_TAMPER_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=mutations, tree_process=st.booleans())
def test_any_single_tampering_is_caught_and_named(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    mutation: tuple[Any, ...],
    tree_process: bool,
) -> None:
    conn = session.connection()
    nested = conn.begin_nested()
    try:
        with checks_bypassed(conn):
            try:
                expected = _apply(session, ledger, mutation)
            except DBAPIError:
                nested.rollback()
                reject()  # the database itself refused the change
            report = verify(session, settings, ledger.signer, batch=7, tree_process=tree_process)
        assert not report.ok, mutation
        assert report.first_bad_seq in expected, (mutation, report.reason)
    finally:
        if nested.is_active:
            nested.rollback()


def test_the_fixture_ledger_is_intact(session: Session, settings: Settings, ledger: Ledger) -> None:
    assert verify(session, settings, ledger.signer, batch=7).ok
    assert ledger.hashes[1] == hashlib.sha256(b"\x00" + ledger.leaves[1].encode()).digest()
