"""append(), checkpoints, the stored leaf and its generated columns, queries."""

from __future__ import annotations

import hashlib
import json

import pytest
from ledger_testkit import fill, sample_events, signer_for, verify
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.errors import InvalidInput, NotFound
from mailveil.ledger import merkle, queries
from mailveil.ledger.append import (
    append,
    checkpoint_at,
    checkpoint_now,
    latest_checkpoint,
    ledger_size,
)
from mailveil.ledger.events import Event
from mailveil.ledger.leaf import GENESIS_PREV, canonical_detail, leaf_text, parse_leaf
from mailveil.ledger.models import LedgerEntry, LedgerHead, LedgerNode
from mailveil.ledger.signing import verify_checkpoint


def test_append_assigns_consecutive_seqs_and_chains(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    assert append(session, [], settings, signer) == []
    first = append(session, sample_events(3), settings, signer)
    second = append(session, sample_events(2, 3), settings, signer)
    assert first == [0, 1, 2] and second == [3, 4]
    assert ledger_size(session) == 5
    rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
    prev = GENESIS_PREV
    for row in rows:
        assert row.prev_hash == prev.hex()
        assert row.leaf_hash == hashlib.sha256(b"\x00" + row.leaf.encode()).digest()
        prev = row.leaf_hash
    head = session.get(LedgerHead, 1)
    assert head is not None and head.size == 5 and head.last_hash == prev
    assert merkle.frontier_root(merkle.frontier_unpack(head.frontier, 5)) == merkle.root(
        [r.leaf_hash for r in rows]
    )


def test_leaf_is_the_json_and_columns_are_generated_from_it(
    session: Session, settings: Settings
) -> None:
    signer = signer_for(settings)
    ev = Event(
        "disclosure",
        actor="principal:9",
        subject="customer:42",
        alias="k7m2@relay.example",
        purpose="order",
        ref=None,
        detail={"z": 1, "a": ["ü", None], "n": {"b": True}},
    )
    (seq,) = append(session, [ev], settings, signer)
    row = session.get(LedgerEntry, seq)
    assert row is not None
    fields = parse_leaf(row.leaf)
    assert list(fields) == [
        "prev",
        "seq",
        "time_us",
        "kind",
        "actor",
        "subject",
        "alias",
        "purpose",
        "ref",
        "detail",
    ]
    assert row.leaf.isascii() and "\n" not in row.leaf
    assert (row.kind, row.actor, row.subject, row.alias, row.purpose, row.ref) == (
        "disclosure",
        "principal:9",
        "customer:42",
        "k7m2@relay.example",
        "order",
        None,
    )
    assert row.time_us == fields["time_us"] and row.time.timestamp() == pytest.approx(
        fields["time_us"] / 1e6
    )
    assert json.loads(row.detail) == ev.detail
    assert row.leaf == leaf_text(
        seq,
        row.time_us,
        GENESIS_PREV,
        "disclosure",
        "principal:9",
        "customer:42",
        "k7m2@relay.example",
        "order",
        None,
        canonical_detail(ev.detail),
    )


def test_none_and_empty_string_are_different_entries(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    append(session, [Event("x", actor=None), Event("x", actor="")], settings, signer)
    a, b = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
    assert a.actor is None and b.actor == ""
    assert '"actor":null' in a.leaf and '"actor":""' in b.leaf


def test_generated_columns_cannot_be_written(session: Session, settings: Settings) -> None:
    append(session, sample_events(1), settings, signer_for(settings))
    conn = session.connection()
    with pytest.raises(DBAPIError), conn.begin_nested():
        conn.exec_driver_sql("UPDATE ledger_entries SET alias = 'other@relay.example'")


def test_leaf_must_name_its_own_seq(session: Session, settings: Settings) -> None:
    append(session, sample_events(2), settings, signer_for(settings))
    conn = session.connection()
    with pytest.raises(DBAPIError), conn.begin_nested():
        conn.exec_driver_sql("UPDATE ledger_entries SET seq = 99 WHERE seq = 1")


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (Event(""), "no kind"),
        (Event("x" * 65), "kind is longer"),
        (Event("x", actor="a\x00b"), "NUL"),
        (Event("x", subject="\ud800"), "not valid Unicode"),
        (Event("x", detail={"t": object()}), "not plain JSON"),
        (Event("x", detail={"f": float("nan")}), "not plain JSON"),
        (Event("x", detail={"deep": ["\x00"]}), "NUL"),
        (Event("x", detail={"big": "y" * 70_000}), "larger than"),
        (Event("x", ref=5), "must be text"),  # type: ignore[arg-type]
    ],
)
def test_bad_events_are_refused_and_nothing_is_written(
    session: Session, settings: Settings, event: Event, fragment: str
) -> None:
    signer = signer_for(settings)
    append(session, sample_events(2), settings, signer)
    with pytest.raises(InvalidInput, match=fragment):
        append(session, [*sample_events(3, 2), event], settings, signer)
    assert ledger_size(session) == 2
    assert verify(session, settings, signer).ok


def test_checkpoints_every_n_entries_even_inside_one_batch(
    session: Session, settings: Settings
) -> None:
    signer = signer_for(settings)  # settings: checkpoint_every_entries=16
    append(session, sample_events(40), settings, signer)
    assert checkpoint_at(session, 16) is not None and checkpoint_at(session, 32) is not None
    latest = latest_checkpoint(session)
    assert latest is not None and latest.tree_size == 32
    rows = session.scalars(select(LedgerEntry.leaf_hash).order_by(LedgerEntry.seq)).all()
    for size in (16, 32):
        cp = checkpoint_at(session, size)
        assert cp is not None
        parsed = verify_checkpoint(cp.note, signer.verifier_key)
        assert parsed.tree_size == size and parsed.root == cp.root == merkle.root(rows[:size])
        assert parsed.origin == settings.origin and parsed.time_us == cp.time_us


def test_checkpoint_after_t_seconds(session: Session, settings: Settings) -> None:
    quick = settings.with_overrides(checkpoint_every_seconds=0.0, checkpoint_every_entries=10**6)
    signer = signer_for(quick)
    append(session, sample_events(3), quick, signer)
    append(session, sample_events(2, 3), quick, signer)
    assert checkpoint_at(session, 3) is not None and checkpoint_at(session, 5) is not None
    slow = settings.with_overrides(checkpoint_every_seconds=3600.0, checkpoint_every_entries=10**6)
    append(session, sample_events(2, 5), slow, signer)
    assert checkpoint_at(session, 7) is None


def test_checkpoint_now(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    assert checkpoint_now(session, settings, signer) is None  # empty ledger
    append(session, sample_events(5), settings, signer)
    assert checkpoint_now(session, settings, signer, only_if_new=True) is not None
    again = checkpoint_now(session, settings, signer)
    assert again is not None and again.tree_size == 5  # the same one, not re-signed
    assert checkpoint_now(session, settings, signer, only_if_new=True) is None
    cp = latest_checkpoint(session)
    assert cp is not None and cp.note == again.note
    assert cp.to_dict()["root_hash"] == cp.root.hex()


def test_tiles_are_stored_for_complete_256_leaf_subtrees(
    session: Session, settings: Settings
) -> None:
    signer = signer_for(settings.with_overrides(checkpoint_every_entries=1000))
    fill(session, settings.with_overrides(checkpoint_every_entries=1000), signer, 600)
    nodes = session.scalars(select(LedgerNode).order_by(LedgerNode.idx)).all()
    assert [(n.level, n.idx) for n in nodes] == [(8, 0), (8, 1)]
    hashes = session.scalars(select(LedgerEntry.leaf_hash).order_by(LedgerEntry.seq)).all()
    assert nodes[1].hash == merkle.root(hashes[256:512])


def test_rollback_leaves_no_trace(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    append(session, sample_events(3), settings, signer)
    session.commit()
    nested = session.begin_nested()
    append(session, sample_events(20, 3), settings, signer)
    nested.rollback()
    assert ledger_size(session) == 3
    assert append(session, sample_events(1, 3), settings, signer) == [3]
    assert verify(session, settings, signer).ok


def test_queries_page_by_seq(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    fill(session, settings, signer, 60)
    alias = "a001x@relay.example"
    everything = queries.entries_for_alias(session, alias, limit=1000)
    assert everything and all(e.alias == alias for e in everything)
    page1 = queries.entries_for_alias(session, alias, limit=2)
    page2 = queries.entries_for_alias(session, alias, after_seq=page1[-1].seq, limit=2)
    assert [e.seq for e in page1 + page2] == [e.seq for e in everything[:4]]
    assert all(
        e.subject == "customer:3" for e in queries.entries_for_subject(session, "customer:3")
    )
    assert queries.entries_for_actor(session, "principal:2")
    assert {e.kind for e in queries.entries_of_kind(session, "reveal")} == {"reveal"}
    entry = queries.entry_dict(queries.get_entry(session, 7))
    assert entry["seq"] == 7 and json.loads(json.dumps(entry)) == entry
    with pytest.raises(NotFound):
        queries.get_entry(session, 10_000)
    with pytest.raises(InvalidInput):
        queries.entries_for_alias(session, alias, limit=0)
