"""Helpers shared by the ledger tests: a signer, a filled ledger, and an attacker's tools."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.ledger.append import append
from mailveil.ledger.events import Event
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


def _p(conn: Connection) -> str:
    return "?" if conn.dialect.name == "sqlite" else "%s"
