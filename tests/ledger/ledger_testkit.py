"""Helpers shared by the ledger tests: a signer, a filled ledger, and an attacker's tools."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from hypothesis import reject
from hypothesis import strategies as st
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.ledger.append import append
from mailveil.ledger.events import Event
from mailveil.ledger.leaf import GENESIS_PREV
from mailveil.ledger.signing import CheckpointSigner, init_signing_key
from mailveil.ledger.verify import VerifyReport, verify_ledger


def signer_for(settings: Settings) -> CheckpointSigner:
    init_signing_key(settings)
    return CheckpointSigner.load(settings)


def sample_events(n: int, start: int = 0) -> list[Event]:
    kinds = ("disclosure", "disclosure_denied", "reveal", "message", "send", "signal")
    out = []
    for i in range(start, start + n):
        out.append(
            Event(
                kind=kinds[i % len(kinds)],
                actor=f"principal:{i % 7}" if i % 5 else None,
                subject=f"customer:{i % 11}",
                alias=f"a{i % 13:03d}x@relay.example" if i % 3 else None,
                purpose="order" if i % 2 else "",
                ref=f"order:{i}" if i % 4 else None,
                detail={"i": i, "note": "grüße"} if i % 6 else {},
            )
        )
    return out


def fill(session: Session, settings: Settings, signer: CheckpointSigner, n: int) -> list[int]:
    """Append n sample events in a few batches of different sizes."""
    seqs: list[int] = []
    done = 0
    for size in (1, 5, 3, 17, 2, 9, 40, 100):
        if done >= n:
            break
        take = min(size, n - done)
        seqs += append(session, sample_events(take, done), settings, signer)
        done += take
    if done < n:
        seqs += append(session, sample_events(n - done, done), settings, signer)
    return seqs


def verify(
    session: Session, settings: Settings, signer: CheckpointSigner, **kw: Any
) -> VerifyReport:
    session.flush()
    return verify_ledger(session.connection(), settings, signer.public_key, **kw)


@contextlib.contextmanager
def checks_bypassed(conn: Connection) -> Iterator[None]:
    """What an attacker with write access does first: switch off the seq check constraint
    (SQLite: ignore CHECKs on this connection; PostgreSQL: drop it, inside the caller's
    transaction so the rollback restores it)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA ignore_check_constraints = 1")
        try:
            yield
        finally:
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = 0")
    else:
        conn.exec_driver_sql(
            "ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_leaf_seq"
        )
        yield


def leaf_of(conn: Connection, seq: int) -> str:
    sql = "SELECT CAST(leaf AS TEXT) FROM ledger_entries WHERE seq = ?".replace("?", _p(conn))
    return str(conn.exec_driver_sql(sql, (seq,)).scalar_one())


def hash_of(conn: Connection, seq: int) -> bytes:
    sql = "SELECT leaf_hash FROM ledger_entries WHERE seq = ?".replace("?", _p(conn))
    return bytes(conn.exec_driver_sql(sql, (seq,)).scalar_one())


def set_row(
    conn: Connection, seq: int, leaf: str | None = None, leaf_hash: bytes | None = None
) -> None:
    if leaf is not None:
        conn.exec_driver_sql(
            "UPDATE ledger_entries SET leaf = ? WHERE seq = ?".replace("?", _p(conn)), (leaf, seq)
        )
    if leaf_hash is not None:
        conn.exec_driver_sql(
            "UPDATE ledger_entries SET leaf_hash = ? WHERE seq = ?".replace("?", _p(conn)),
            (leaf_hash, seq),
        )


def renumber(conn: Connection, old: int, new: int) -> None:
    sql = "UPDATE ledger_entries SET seq = ? WHERE seq = ?".replace("?", _p(conn))
    conn.exec_driver_sql(sql, (new, old))


def insert_row(conn: Connection, seq: int, leaf: str, leaf_hash: bytes) -> None:
    conn.exec_driver_sql(
        "INSERT INTO ledger_entries (seq, leaf, leaf_hash) VALUES (?, ?, ?)".replace("?", _p(conn)),
        (seq, leaf, leaf_hash),
    )


def forged_leaf(prev: bytes, seq: int, **fields: Any) -> tuple[str, bytes]:
    """A well-formed leaf an attacker could write, with its correct hash."""
    body = {
        "prev": prev.hex(),
        "seq": seq,
        "time_us": 1_700_000_000_000_000,
        "kind": "disclosure",
        "actor": "principal:666",
        "subject": "customer:1",
        "alias": None,
        "purpose": "order",
        "ref": None,
        "detail": {},
    }
    body.update(fields)
    text = json.dumps(body, separators=(",", ":"))
    return text, hashlib.sha256(b"\x00" + text.encode()).digest()


def edit_leaf(text: str, key: str, value: Any) -> str:
    """The same leaf with one field changed, key order kept."""
    body = json.loads(text)
    body[key] = value
    return json.dumps(body, separators=(",", ":"))


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


def mutations(n: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """Single changes to a ledger of n entries (see apply_mutation)."""
    index = st.integers(0, n - 1)
    return st.one_of(
        st.tuples(st.just("edit"), index, st.sampled_from(sorted(_values))).flatmap(
            lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), _values[t[2]])
        ),
        st.tuples(st.just("respace"), index),
        st.tuples(st.just("hash"), index, st.binary(min_size=0, max_size=40)),
        st.tuples(st.just("move"), index, st.integers(n, n + 100) | st.integers(-100, -1)),
        st.tuples(st.just("delete"), index),
        st.tuples(st.just("insert"), st.integers(0, n), st.none() | index),
        st.tuples(st.just("swap"), index, index).filter(lambda t: t[1] != t[2]),
    )


def apply_mutation(
    conn: Connection, leaves: list[str], hashes: list[bytes], n: int, mutation: tuple[Any, ...]
) -> set[int]:
    """Make the change; return the seqs verify may rightly name (one, or two when a row was
    duplicated next to itself: then either twin is "the" inserted one)."""
    kind, k = mutation[0], mutation[1]
    if kind == "edit":
        field, value = mutation[2], mutation[3]
        body = json.loads(leaves[k])
        if body[field] == value:
            reject()
        body[field] = value
        set_row(conn, k, leaf=json.dumps(body, separators=(",", ":")))
        return {k}
    if kind == "respace":
        set_row(conn, k, leaf=leaves[k].replace(",", ", ", 1))
        return {k}
    if kind == "hash":
        if mutation[2] == hashes[k]:
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
        for seq in range(n - 1, k - 1, -1):
            renumber(conn, seq, seq + 1)
        if copy is None:
            prev = hashes[k - 1] if k else GENESIS_PREV
            leaf, digest = forged_leaf(prev, k)
        else:
            leaf, digest = leaves[copy], hashes[copy]
        insert_row(conn, k, leaf, digest)
        if copy is not None and copy in (k - 1, k):
            return {copy, copy + 1}  # twins side by side
        return {k}
    assert kind == "swap"
    i, j = sorted((mutation[1], mutation[2]))
    set_row(conn, i, leaves[j], hashes[j])
    set_row(conn, j, leaves[i], hashes[i])
    return {i}


def _p(conn: Connection) -> str:
    return "?" if conn.dialect.name == "sqlite" else "%s"
