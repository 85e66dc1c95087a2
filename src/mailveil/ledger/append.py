"""Appending events, and the signed checkpoints made along the way.

Appenders serialise on the one ``ledger_head`` row (SELECT ... FOR UPDATE on PostgreSQL, a
no-op UPDATE that takes SQLite's write lock first), so sequence numbers, the hash chain and
the Merkle frontier advance together inside the caller's transaction: if it rolls back,
nothing of the append remains.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, event, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, SessionTransaction

from mailveil.config import Settings
from mailveil.errors import InvalidInput
from mailveil.ledger import merkle
from mailveil.ledger.counting import note_appended
from mailveil.ledger.events import Event
from mailveil.ledger.layout import HEAD_ID
from mailveil.ledger.leaf import GENESIS_PREV, canonical_detail, leaf_text
from mailveil.ledger.models import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerHead,
    LedgerNode,
    from_time_us,
)
from mailveil.ledger.signing import CheckpointSigner

MAX_DETAIL_BYTES = 64 * 1024
_LIMITS = {"kind": 64, "actor": 255, "subject": 255, "alias": 320, "purpose": 255, "ref": 255}
_SHORTEST_LIMIT = min(_LIMITS.values())

_entries = cast(Table, LedgerEntry.__table__)
_head = cast(Table, LedgerHead.__table__)
_checkpoints = cast(Table, LedgerCheckpoint.__table__)
_nodes = cast(Table, LedgerNode.__table__)


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root: bytes
    time_us: int
    note: str

    @property
    def created_at(self) -> datetime:
        return from_time_us(self.time_us)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root.hex(),
            "time": self.created_at.isoformat(),
            "note": self.note,
        }


@dataclass
class _HeadState:
    size: int
    last_hash: bytes
    frontier: list[bytes]
    checkpoint_size: int
    checkpoint_time_us: int


def now_us() -> int:
    return time.time_ns() // 1000


def _check_text(name: str, value: object, limit: int, index: int) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidInput(f"ledger event {index}: {name} must be text")
    if len(value) > limit:
        raise InvalidInput(f"ledger event {index}: {name} is longer than {limit} characters")
    _check_chars(f"ledger event {index}: {name}", value)


def _check_chars(where: str, value: str) -> None:
    # NUL and lone surrogates are valid JSON escapes but PostgreSQL cannot store them as text.
    if "\x00" in value:
        raise InvalidInput(f"{where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{where} is not valid Unicode") from exc


def _check_detail_strings(value: object, where: str) -> None:
    if isinstance(value, str):
        _check_chars(where, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_detail_strings(key, where)
            _check_detail_strings(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_detail_strings(item, where)


def _validated(events: Sequence[Event]) -> list[tuple[Event, str]]:
    """Each event with its canonical detail; InvalidInput naming the first bad one.

    The common case costs a few C-level checks per event; the precise (slow) checks run
    only to explain a failure.
    """
    out = []
    for i, ev in enumerate(events):
        if type(ev) is not Event:
            raise InvalidInput(f"ledger event {i} is not an Event")
        texts = [v for v in (ev.kind, ev.actor, ev.subject, ev.alias, ev.purpose, ev.ref) if v]
        try:
            probe = "\x01".join(texts)  # TypeError if any is not text
        except TypeError:
            probe = "\x00"
        if (
            not ev.kind
            or "\x00" in probe  # also: something was not text
            or len(ev.kind) > _LIMITS["kind"]
            or max(map(len, texts)) > _SHORTEST_LIMIT
            or (not probe.isascii() and not _utf8_ok(probe))
        ):
            _check_fields(i, ev)
        if type(ev.detail) is not dict:
            raise InvalidInput(f"ledger event {i}: detail must be a JSON object")
        try:
            detail = canonical_detail(ev.detail)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"ledger event {i}: detail is not plain JSON: {exc}") from exc
        if len(detail) > MAX_DETAIL_BYTES:
            raise InvalidInput(f"ledger event {i}: detail is larger than {MAX_DETAIL_BYTES} bytes")
        # ASCII JSON spells NUL and surrogates (lone or paired) as \u0000 and \udXXX.
        if "\\u0000" in detail or "\\ud" in detail:
            _check_detail_strings(ev.detail, f"ledger event {i}: detail")
        out.append((ev, detail))
    return out


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_fields(index: int, ev: Event) -> None:
    """The precise field checks, for events the fast checks could not clear."""
    if not ev.kind:
        raise InvalidInput(f"ledger event {index} has no kind")
    for name, limit in _LIMITS.items():
        _check_text(name, getattr(ev, name), limit, index)


# The head's statements, built once: constructing one (and its cache key) for every append
# cost more than running it. The save's SET clause comes from the parameters it is given.
_READ_HEAD_FOR_UPDATE = select(_head).where(_head.c.id == HEAD_ID).with_for_update()
# SQLite has no row locks: a write takes the database write lock up front, so two appenders
# cannot both read the same head and then collide. RETURNING reads the head in the same
# statement (one round trip, not two).
_LOCK_HEAD_SQLITE = (
    update(_head).where(_head.c.id == HEAD_ID).values(size=_head.c.size).returning(*_head.c)
)
_SAVE_HEAD = update(_head).where(_head.c.id == HEAD_ID)
_INSERT_ENTRIES = insert(_entries)
_INSERT_NODES = insert(_nodes)
_INSERT_CHECKPOINT = insert(_checkpoints)


def _lock_head(session: Session) -> _HeadState:
    """Take the appenders' lock and read the head, creating it on first use."""
    dialect = session.get_bind().dialect.name
    stmt = _READ_HEAD_FOR_UPDATE if dialect == "postgresql" else _LOCK_HEAD_SQLITE
    for _ in range(2):
        row = session.execute(stmt).first()
        if row is not None:
            m = row._mapping
            size = int(m["size"])
            return _HeadState(
                size=size,
                last_hash=bytes(m["last_hash"]),
                frontier=merkle.frontier_unpack(bytes(m["frontier"]), size),
                checkpoint_size=int(m["checkpoint_size"]),
                checkpoint_time_us=int(m["checkpoint_time_us"]),
            )
        values = {
            "id": HEAD_ID,
            "size": 0,
            "last_hash": GENESIS_PREV,
            "frontier": b"",
            "checkpoint_size": 0,
            "checkpoint_time_us": now_us(),
        }
        ins = pg_insert(_head) if dialect == "postgresql" else sqlite_insert(_head)
        session.execute(ins.values(values).on_conflict_do_nothing(index_elements=["id"]))
    raise RuntimeError("ledger head row could not be created")


def _save_head(session: Session, state: _HeadState) -> None:
    session.execute(
        _SAVE_HEAD,
        {
            "size": state.size,
            "last_hash": state.last_hash,
            "frontier": merkle.frontier_pack(state.frontier),
            "checkpoint_size": state.checkpoint_size,
            "checkpoint_time_us": state.checkpoint_time_us,
        },
    )


def _make_checkpoint(
    session: Session, state: _HeadState, settings: Settings, signer: CheckpointSigner, at_us: int
) -> Checkpoint:
    root = merkle.frontier_root(state.frontier)
    note = signer.sign_checkpoint(settings.origin, state.size, root, at_us)
    session.execute(
        _INSERT_CHECKPOINT, {"tree_size": state.size, "root": root, "time_us": at_us, "note": note}
    )
    state.checkpoint_size = state.size
    state.checkpoint_time_us = at_us
    return Checkpoint(state.size, root, at_us, note)


def append(
    session: Session, events: Sequence[Event], settings: Settings, signer: CheckpointSigner
) -> list[int]:
    """Append events in order; return their sequence numbers (0-based, = Merkle leaf index).

    Writes inside the caller's transaction; commits nothing. Signs a checkpoint each time
    ``checkpoint_every_entries`` entries have accumulated, and at the end when
    ``checkpoint_every_seconds`` have passed since the last one.
    """
    if not events:
        return []
    prepared = _validated(events)
    state = _lock_head(session)
    at = now_us()
    first = state.size
    size = state.size
    prev = state.last_hash
    frontier = state.frontier
    every = settings.checkpoint_every_entries
    sha256 = hashlib.sha256
    rows: list[dict[str, Any]] = []
    tiles: list[merkle.Tile] = []
    for ev, detail in prepared:
        leaf = leaf_text(
            size, at, prev, ev.kind, ev.actor, ev.subject, ev.alias, ev.purpose, ev.ref, detail
        )
        lh = sha256(b"\x00" + leaf.encode("ascii")).digest()
        rows.append({"seq": size, "leaf": leaf, "leaf_hash": lh})
        # Completed subtrees of height 8, 16, ... are stored as tiles for proofs.
        merkle.frontier_push(frontier, size, lh, tiles)
        size += 1
        prev = lh
        if size - state.checkpoint_size >= every:
            session.execute(_INSERT_ENTRIES, rows)
            rows = []
            state.size, state.last_hash, state.frontier = size, prev, frontier
            _make_checkpoint(session, state, settings, signer, at)
    if rows:
        session.execute(_INSERT_ENTRIES, rows)
    if tiles:
        nodes = [{"level": level, "idx": idx, "hash": node} for level, idx, node in tiles]
        session.execute(_INSERT_NODES, nodes)
    state.size, state.last_hash, state.frontier = size, prev, frontier
    due = at - state.checkpoint_time_us >= settings.checkpoint_every_seconds * 1_000_000
    if due and state.checkpoint_size < size:
        _make_checkpoint(session, state, settings, signer, at)
    _save_head(session, state)
    note_appended(session, size - first)  # counted by the metrics when committed
    return list(range(first, size))


_GATE = "mailveil_ledger_gate"  # Session.info key: the gate this session's transaction holds
_gate_listening = threading.Lock()
_gate_listener: list[bool] = []


def _release_gate(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and (gate := session.info.pop(_GATE, None)) is not None:
        gate.release()


class HeadGate:
    """Appenders of one process take their turn for the head here before they take the
    database's lock, and hold it until their transaction ends: the database's lock queue
    then holds at most one appender per process. Without it, each API request that appends
    (a disclosure, a checkpoint) waited in PostgreSQL's queue for the head row, and the
    relay's group commit waited behind all of them (issue 16, mixed load: relay p99 12 x
    its idle p99 with 32 API clients; sampling pg_stat_activity showed the waits on the
    head row). The wait is bounded (``wait_seconds``): past it the appender queues in the
    database as before, so a cycle through some other lock is still broken by PostgreSQL's
    deadlock detector rather than hanging here.

    PostgreSQL only. SQLite's one write lock already serialises every writer, and a gate
    taken before it inverts the order for a transaction that began IMMEDIATE (it holds the
    write lock, then waits for the gate, whose holder waits for the write lock): the API
    then stalled for the gate's whole wait."""

    def __init__(self, wait_seconds: float = 5.0) -> None:
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        with _gate_listening:
            if not _gate_listener:  # once per process, not at import
                event.listen(Session, "after_transaction_end", _release_gate)
                _gate_listener.append(True)

    def enter(self, session: Session) -> None:
        """Wait for this process's turn (once per transaction; released when it ends)."""
        if _GATE in session.info or session.get_bind().dialect.name != "postgresql":
            return
        session.connection()  # (begins the transaction whose end releases the turn)
        if self._lock.acquire(timeout=self.wait_seconds):
            session.info[_GATE] = self

    def release(self) -> None:
        self._lock.release()


@dataclass(frozen=True)
class Ledger:
    """The ledger one process writes to: the settings its checkpoints follow and the key that
    signs them, built once (``Runtime.ledger``) and passed where events are appended, so callers
    carry one object instead of the settings and signer pair."""

    settings: Settings
    signer: CheckpointSigner
    gate: HeadGate = field(default_factory=HeadGate, compare=False, repr=False)

    @classmethod
    def load(cls, settings: Settings) -> Ledger:
        return cls(settings, CheckpointSigner.load(settings))

    def append(self, session: Session, events: Sequence[Event]) -> list[int]:
        """See :func:`append`; waits for this process's turn first (``HeadGate``)."""
        if events:
            self.gate.enter(session)
        return append(session, events, self.settings, self.signer)

    def checkpoint_now(self, session: Session, *, only_if_new: bool = False) -> Checkpoint | None:
        """See :func:`checkpoint_now`; waits for this process's turn first (``HeadGate``)."""
        self.gate.enter(session)
        return checkpoint_now(session, self.settings, self.signer, only_if_new=only_if_new)


def checkpoint_now(
    session: Session, settings: Settings, signer: CheckpointSigner, *, only_if_new: bool = False
) -> Checkpoint | None:
    """Sign a checkpoint of the ledger as it is now (None while it is empty).

    If the newest checkpoint already covers every entry it is returned, not signed again;
    with ``only_if_new`` (the periodic task) None is returned then, and a quiet ledger costs
    one read, no write lock.
    """
    if only_if_new:
        row = session.execute(
            select(_head.c.size, _head.c.checkpoint_size).where(_head.c.id == HEAD_ID)
        ).first()
        if row is None or int(row[0]) == int(row[1]):
            return None
    state = _lock_head(session)
    if state.size == 0:
        return None
    if state.checkpoint_size == state.size:
        if only_if_new:
            return None
        existing = checkpoint_at(session, state.size)
        if existing is not None:
            return existing
    cp = _make_checkpoint(session, state, settings, signer, now_us())
    _save_head(session, state)
    return cp


def _to_checkpoint(row: Any) -> Checkpoint:
    m = row._mapping
    return Checkpoint(int(m["tree_size"]), bytes(m["root"]), int(m["time_us"]), m["note"])


def latest_checkpoint(session: Session) -> Checkpoint | None:
    row = session.execute(
        select(_checkpoints).order_by(_checkpoints.c.tree_size.desc()).limit(1)
    ).first()
    return None if row is None else _to_checkpoint(row)


def checkpoint_at(session: Session, tree_size: int) -> Checkpoint | None:
    row = session.execute(select(_checkpoints).where(_checkpoints.c.tree_size == tree_size)).first()
    return None if row is None else _to_checkpoint(row)


def ledger_size(session: Session) -> int:
    """Number of entries appended (committed or in this transaction)."""
    size = session.execute(select(_head.c.size).where(_head.c.id == HEAD_ID)).scalar()
    return int(size or 0)


__all__ = [
    "Checkpoint",
    "Ledger",
    "append",
    "checkpoint_at",
    "checkpoint_now",
    "latest_checkpoint",
    "ledger_size",
    "now_us",
]
