"""The witness's own state: which logs it follows (origin and trusted keys), the latest
checkpoint it cosigned for each, and the validly signed submissions it refused.

One SQLite file in the witness's directory, through the standard library (the witness needs
neither mailveil's database nor its schema migrations). Crash and race safety come from
SQLite itself:

- WAL journal with ``synchronous=FULL``: a transaction is on disk when COMMIT returns, and the
  witness answers with a cosignature only after that, as tlog-witness requires;
- ``BEGIN IMMEDIATE`` before reading the latest checkpoint: the check ("old size = my size")
  and the update happen under SQLite's write lock, so two submissions racing, from two threads
  or two witness processes on the same directory, cannot roll the log back (the race the spec
  describes); the loser sees the winner's size and gets 409.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 1
MAX_REFUSALS_PER_LOG = 1000  # the newest ones are kept: enough evidence, bounded growth

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT NOT NULL,
    vkey TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (origin, vkey)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT PRIMARY KEY,
    origin_hash TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    old_size INTEGER NOT NULL,
    size INTEGER NOT NULL,
    witnessed_size INTEGER NOT NULL,
    note TEXT NOT NULL,
    proof TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_refusals_origin ON refusals (origin, id);
"""


def origin_hash(origin: str) -> str:
    """How tlog-witness names a log in monitoring URLs: lowercase hex SHA-256 of the origin."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Cosigned:
    """The latest checkpoint the witness cosigned for one log."""

    origin: str
    size: int
    root: bytes
    note: str  # the checkpoint with the log's signatures and the witness's cosignature
    updated_at: str


@dataclass(frozen=True)
class Refusal:
    id: int
    origin: str
    received_at: str
    status: int
    reason: str
    old_size: int
    size: int
    witnessed_size: int
    note: str
    proof: str


@dataclass(frozen=True)
class FollowedLog:
    origin: str
    vkeys: tuple[str, ...]
    latest: Cosigned | None


class Transaction:
    """What one add-checkpoint does under the write lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def latest(self, origin: str) -> Cosigned | None:
        row = self.conn.execute(
            "SELECT origin, size, root, note, updated_at FROM checkpoints WHERE origin = ?",
            (origin,),
        ).fetchone()
        return None if row is None else Cosigned(row[0], int(row[1]), bytes(row[2]), *row[3:])

    def store(self, origin: str, size: int, root: bytes, note: str) -> None:
        self.conn.execute(
            "INSERT INTO checkpoints (origin, origin_hash, size, root, note, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
            "root = excluded.root, note = excluded.note, updated_at = excluded.updated_at",
            (origin, origin_hash(origin), size, root, note, _now()),
        )

    def refuse(
        self,
        origin: str,
        status: int,
        reason: str,
        *,
        old_size: int,
        size: int,
        witnessed_size: int,
        note: str,
        proof: str,
    ) -> None:
        """Keep a validly signed submission that was not cosigned: a log that signs two
        inconsistent checkpoints has proved its own misbehaviour with them."""
        self.conn.execute(
            "INSERT INTO refusals (origin, received_at, status, reason, old_size, size, "
            "witnessed_size, note, proof) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (origin, _now(), status, reason, old_size, size, witnessed_size, note, proof),
        )
        self.conn.execute(
            "DELETE FROM refusals WHERE origin = ? AND id <= "
            "(SELECT id FROM refusals WHERE origin = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (origin, origin, MAX_REFUSALS_PER_LOG),
        )


class WitnessState:
    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(self._connect()) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{path} was written by a newer mailveil (schema {version}); upgrade first"
                )
            if version < SCHEMA_VERSION:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A transaction holding SQLite's write lock from its first statement on."""
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- identity and configuration ---------------------------------------------------------

    def name(self) -> str | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
        return None if row is None else str(row[0])

    def set_name(self, name: str) -> None:
        with self.write() as tx:
            tx.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('name', ?) ON CONFLICT (key) DO NOTHING",
                (name,),
            )

    def add_log(self, origin: str, vkey: str) -> bool:
        """Trust ``vkey`` for checkpoints of ``origin``; False if it already was."""
        with self.write() as tx:
            cur = tx.conn.execute(
                "INSERT INTO logs (origin, vkey, added_at) VALUES (?, ?, ?) "
                "ON CONFLICT (origin, vkey) DO NOTHING",
                (origin, vkey, _now()),
            )
            return cur.rowcount == 1

    def remove_log_key(self, origin: str, vkey: str) -> bool:
        with self.write() as tx:
            cur = tx.conn.execute("DELETE FROM logs WHERE origin = ? AND vkey = ?", (origin, vkey))
            return cur.rowcount == 1

    def log_vkeys(self, origin: str) -> list[str]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT vkey FROM logs WHERE origin = ? ORDER BY added_at", (origin,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def logs(self) -> list[FollowedLog]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT origin, vkey FROM logs ORDER BY origin, added_at")
            keys: dict[str, list[str]] = {}
            for origin, vkey in rows:
                keys.setdefault(str(origin), []).append(str(vkey))
            tx = Transaction(conn)
            return [FollowedLog(o, tuple(v), tx.latest(o)) for o, v in keys.items()]

    # -- monitoring --------------------------------------------------------------------------

    def latest_by_hash(self, hashed_origin: str) -> Cosigned | None:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT origin FROM checkpoints WHERE origin_hash = ?", (hashed_origin,)
            ).fetchone()
            return None if row is None else Transaction(conn).latest(str(row[0]))

    def refusals(self, origin: str | None = None, limit: int = 100) -> list[Refusal]:
        sql = "SELECT * FROM refusals"
        args: tuple[object, ...] = ()
        if origin is not None:
            sql += " WHERE origin = ?"
            args = (origin,)
        with closing(self._connect()) as conn:
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [Refusal(*row) for row in rows]


__all__ = [
    "Cosigned",
    "FollowedLog",
    "Refusal",
    "Transaction",
    "WitnessState",
    "origin_hash",
]
