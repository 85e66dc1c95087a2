"""verify_ledger on intact ledgers and on each kind of tampering, named precisely."""

from __future__ import annotations

import hashlib

import pytest
from ledger_testkit import (
    checks_bypassed,
    edit_leaf,
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
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.ledger import merkle
from mailveil.ledger.append import append
from mailveil.ledger.signing import CheckpointSigner
from mailveil.ledger.verify import verify_ledger


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("batch", [1, 7, 16, 1000])
def test_intact_ledger_verifies_with_progress(
    session: Session, settings: Settings, batch: int, threaded: bool
) -> None:
    signer = signer_for(settings)
    fill(session, settings, signer, 300)  # 18 checkpoints, one 256-leaf tile
    seen: list[int] = []
    report = verify(session, settings, signer, progress=seen.append, batch=batch, threaded=threaded)
    assert report.ok, report.problems
    assert (report.entries, report.size, report.checkpoints, report.nodes) == (300, 300, 18, 1)
    assert seen == sorted(seen) and seen[-1] == 300
    assert report.first_bad_seq is None and report.reason is None


def test_empty_ledger_verifies(session: Session, settings: Settings) -> None:
    report = verify(session, settings, signer_for(settings))
    assert report.ok and report.entries == 0 and report.root == merkle.EMPTY_ROOT


def test_verify_from_an_engine_sees_committed_entries(engine: Engine, settings: Settings) -> None:
    signer = signer_for(settings)
    report = verify_ledger(engine, settings, signer.verifier_key)
    assert report.ok, report.problems


def test_wrong_key_fails_at_the_first_checkpoint(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    fill(session, settings, signer, 20)
    other = CheckpointSigner.generate(settings.origin)
    report = verify(session, settings, other)
    assert not report.ok and report.bad_checkpoint == 16 and "signature" in (report.reason or "")


def _tampered(session: Session, settings: Settings, n: int = 40) -> CheckpointSigner:
    signer = signer_for(settings)
    fill(session, settings, signer, n)
    return signer


def test_changed_field_is_named(session: Session, settings: Settings) -> None:
    signer = _tampered(session, settings)
    conn = session.connection()
    set_row(conn, 23, leaf=edit_leaf(leaf_of(conn, 23), "actor", "principal:evil"))
    report = verify(session, settings, signer, batch=8)
    assert (report.ok, report.first_bad_seq) == (False, 23)
    assert "does not match its stored hash" in (report.reason or "")


def test_changed_hash_is_named(session: Session, settings: Settings) -> None:
    signer = _tampered(session, settings)
    conn = session.connection()
    set_row(conn, 5, leaf_hash=bytes(32))
    assert verify(session, settings, signer).first_bad_seq == 5


def test_deleted_entry_is_named(session: Session, settings: Settings) -> None:
    signer = _tampered(session, settings)
    conn = session.connection()
    conn.exec_driver_sql("DELETE FROM ledger_entries WHERE seq = 17")
    report = verify(session, settings, signer)
    assert report.first_bad_seq == 17 and "missing" in (report.reason or "")
    conn.exec_driver_sql("DELETE FROM ledger_entries WHERE seq >= 39")
    assert verify(session, settings, signer).first_bad_seq == 17


def test_deleted_last_entry_is_named(session: Session, settings: Settings) -> None:
    signer = _tampered(session, settings)
    session.connection().exec_driver_sql("DELETE FROM ledger_entries WHERE seq = 39")
    assert verify(session, settings, signer).first_bad_seq == 39


def test_entry_appended_behind_the_heads_back_is_named(
    session: Session, settings: Settings
) -> None:
    signer = _tampered(session, settings)
    conn = session.connection()
    leaf, digest = forged_leaf(hash_of(conn, 39), 40)
    insert_row(conn, 40, leaf, digest)
    report = verify(session, settings, signer)
    assert report.first_bad_seq == 40 and "outside" in (report.reason or "")


def test_entry_inserted_in_the_middle_is_named(session: Session, settings: Settings) -> None:
    signer = _tampered(session, settings)
    conn = session.connection()
    with checks_bypassed(conn):
        for seq in range(39, 19, -1):  # make room at 20, highest first (seq is unique)
            renumber(conn, seq, seq + 1)
        leaf, digest = forged_leaf(hash_of(conn, 19), 20)
        insert_row(conn, 20, leaf, digest)
        report = verify(session, settings, signer)
    assert report.first_bad_seq == 20 and "inserted" in (report.reason or "")


def test_swapped_entries_are_named(session: Session, settings: Settings) -> None:
    signer = _tampered(session, settings)
    conn = session.connection()
    a, b = (leaf_of(conn, 11), hash_of(conn, 11)), (leaf_of(conn, 12), hash_of(conn, 12))
    with checks_bypassed(conn):
        set_row(conn, 11, *b)
        set_row(conn, 12, *a)
        assert verify(session, settings, signer).first_bad_seq == 11


def test_consistent_rewrite_is_caught_by_the_next_checkpoint(
    session: Session, settings: Settings
) -> None:
    """An attacker who recomputes every hash after the change (and the head) keeps the chain
    consistent; the signed checkpoint still names the stretch that was rewritten."""
    signer = _tampered(session, settings, 40)  # checkpoints at 16 and 32
    conn = session.connection()
    prev = hash_of(conn, 19)
    for seq in range(20, 40):
        leaf = edit_leaf(leaf_of(conn, seq), "prev", prev.hex())
        if seq == 20:
            leaf = edit_leaf(leaf, "subject", "customer:someone-else")
        digest = hashlib.sha256(b"\x00" + leaf.encode()).digest()
        set_row(conn, seq, leaf, digest)
        prev = digest
    report = verify(session, settings, signer)
    assert not report.ok and report.bad_checkpoint == 32 and report.first_bad_seq == 16
    assert "16..31" in (report.reason or "")


def test_head_checkpoints_and_tiles_are_checked(session: Session, settings: Settings) -> None:
    wide = settings.with_overrides(checkpoint_every_entries=100)
    signer = signer_for(wide)
    fill(session, wide, signer, 300)
    conn = session.connection()

    def check(sql: str, expected: str) -> None:
        nested = conn.begin_nested()
        conn.exec_driver_sql(sql)
        report = verify(session, wide, signer)
        nested.rollback()
        assert not report.ok and expected in (report.reason or ""), report.problems

    check("UPDATE ledger_head SET size = 301", "missing")
    check("UPDATE ledger_head SET size = 299", "outside")
    check("UPDATE ledger_head SET frontier = frontier || frontier", "frontier")
    check(
        "UPDATE ledger_head SET last_hash = (SELECT leaf_hash FROM ledger_entries WHERE seq = 5)",
        "last_hash",
    )
    check(
        "UPDATE ledger_checkpoints SET time_us = time_us + 1 WHERE tree_size = 200", "signed time"
    )
    check("UPDATE ledger_checkpoints SET note = replace(note, '\n200\n', '\n201\n')", "signature")
    check("DELETE FROM ledger_checkpoints WHERE tree_size = 300", "named by the head")
    check("UPDATE ledger_nodes SET idx = 5", "ledger_nodes")
    check("DELETE FROM ledger_nodes", "ledger_nodes")
    check("UPDATE ledger_checkpoints SET tree_size = 400 WHERE tree_size = 300", "")
    assert verify(session, wide, signer).ok


def test_appending_after_verify_keeps_verifying(session: Session, settings: Settings) -> None:
    signer = _tampered(session, settings, 10)
    assert verify(session, settings, signer).ok
    append(session, [], settings, signer)
    fill(session, settings, signer, 5)
    assert verify(session, settings, signer).ok
