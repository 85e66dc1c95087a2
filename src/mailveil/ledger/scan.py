"""Reading the ledger for verification, fast: one aggregate query per batch of entries.

Each batch comes back as a handful of values (the seq range, all leaves joined, all stored
hashes joined) built inside the database, so Python creates a few objects per batch instead
of several per row, and the database does its part while the GIL is released (sqlite3 and
psycopg release it during a query): a reader thread fetches batch k+1 while the checker
hashes batch k. Valid leaves are ASCII JSON without raw newlines, so splitting on newlines is
exact; any surprise makes the checker re-read that batch row by row.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from mailveil.ledger.layout import GENERATED_COLUMNS, HEAD_ID, SEQ_CHECK, TILE_HEIGHT

# Leaves are joined with "\n\x00": prefix the whole with one 0x00, split on "\n", and each
# part is 0x00 || leaf, ready to hash, with no per-row work in SQL or Python.
_AGG = {
    "sqlite": (
        "SELECT count(*), min(seq), max(seq), CAST(group_concat(leaf, char(10, 0)) AS BLOB), "
        "CAST(group_concat(leaf_hash, '') AS BLOB) FROM (SELECT seq, leaf, leaf_hash "
        "FROM ledger_entries WHERE seq >= ? AND seq < ? ORDER BY seq)"
    ),
    "postgresql": (
        "SELECT count(*), min(seq), max(seq), "
        "string_agg(convert_to(leaf::text, 'UTF8'), '\\x0a00'::bytea ORDER BY seq), "
        "string_agg(leaf_hash, ''::bytea ORDER BY seq) "
        "FROM ledger_entries WHERE seq >= ? AND seq < ?"
    ),
}

_ROWS = {
    "sqlite": "SELECT seq, CAST(x'00' || leaf AS BLOB), CAST(leaf_hash AS BLOB) "
    "FROM ledger_entries WHERE seq >= ? AND seq < ? ORDER BY seq",
    "postgresql": "SELECT seq, '\\x00'::bytea || convert_to(leaf::text, 'UTF8'), leaf_hash "
    "FROM ledger_entries WHERE seq >= ? AND seq < ? ORDER BY seq",
}


@dataclass
class Batch:
    lo: int  # first seq of the batch
    hi: int  # one past the last seq
    agg: tuple[Any, ...]  # count, min seq, max seq, joined leaves, joined hashes
    checkpoints: list[tuple[Any, ...]]  # tree_size, root, time_us, note; sizes in (lo, hi]
    nodes: list[tuple[Any, ...]]  # level, idx, hash of stored nodes ending in (lo, hi]


class Reader:
    """All reads of one verification, on one DBAPI connection (one snapshot)."""

    def __init__(self, dbapi: Any, dialect: str, batch: int) -> None:
        if dialect not in _AGG:
            raise ValueError(f"ledger verification supports sqlite and postgresql, not {dialect}")
        self.dbapi = dbapi
        self.dialect = dialect
        self.batch = batch
        self._param = "?" if dialect == "sqlite" else "%s"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.dbapi.cursor()
        try:
            cur.execute(sql.replace("?", self._param), params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def blob(self, column: str) -> str:
        # SQLite columns hold any type: read blobs as blobs even if someone stored text.
        return f"CAST({column} AS BLOB)" if self.dialect == "sqlite" else column

    def head(self) -> tuple[Any, ...] | None:
        rows = self.query(
            f"SELECT size, {self.blob('last_hash')}, {self.blob('frontier')}, "  # noqa: S608
            "checkpoint_size FROM ledger_head WHERE id = ?",
            (HEAD_ID,),
        )
        return rows[0] if rows else None

    def batches(self, start: int, end: int) -> Generator[Batch, None, None]:
        lo = start
        while lo < end:
            hi = min(end, lo + self.batch)
            agg = self.query(_AGG[self.dialect], (lo, hi))[0]
            yield Batch(lo, hi, agg, self.checkpoints_in(lo, hi), self._nodes(lo, hi))
            lo = hi

    def rows(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        return self.query(_ROWS[self.dialect], (lo, hi))

    def checkpoints_in(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        low = -1 if lo == 0 else lo  # a checkpoint of size 0 belongs to the first batch
        return self.query(
            f"SELECT tree_size, {self.blob('root')}, time_us, note "  # noqa: S608
            "FROM ledger_checkpoints WHERE tree_size > ? AND tree_size <= ? ORDER BY tree_size",
            (low, hi),
        )

    def _nodes(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        level = TILE_HEIGHT
        while (1 << level) <= hi:
            first, last = lo >> level, (hi >> level) - 1
            if last >= first:
                out.extend(
                    self.query(
                        f"SELECT level, idx, {self.blob('hash')} FROM ledger_nodes "  # noqa: S608
                        "WHERE level = ? AND idx >= ? AND idx <= ? ORDER BY idx",
                        (level, first, last),
                    )
                )
            level += TILE_HEIGHT
        return out

    def stray_entry(self, size: int) -> int | None:
        """The lowest seq outside [0, size), if any row has one."""
        # Two range probes on the primary key; "seq >= ? OR seq < 0" would scan the table.
        below = self.query("SELECT min(seq) FROM ledger_entries WHERE seq < 0")[0][0]
        if below is not None:
            return int(below)
        above = self.query("SELECT min(seq) FROM ledger_entries WHERE seq >= ?", (size,))
        return None if above[0][0] is None else int(above[0][0])

    def schema_problems(self) -> list[str]:
        """The generated columns and the seq check must still be what models.py made."""
        if self.dialect == "sqlite":
            # table_xinfo's "hidden" is 2 or 3 for generated columns.
            cols = self.query("PRAGMA table_xinfo(ledger_entries)")
            generated = {str(c[1]) for c in cols if c[6] in (2, 3)}
            rows = self.query(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ledger_entries'"
            )
            ddl = " ".join(str(rows[0][0]).split()) if rows else ""
            checked = "CHECK (CAST(leaf ->> 'seq' AS BIGINT) = seq)" in ddl
        else:
            rows = self.query(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'ledger_entries' "
                "AND is_generated = 'ALWAYS'"
            )
            generated = {str(r[0]) for r in rows}
            checked = bool(
                self.query(
                    "SELECT 1 FROM pg_constraint WHERE conrelid = 'ledger_entries'::regclass "
                    "AND contype = 'c' AND convalidated AND conname = ?",
                    (SEQ_CHECK,),
                )
            )
        problems = [
            f"ledger_entries.{c} is no longer generated from the leaf"
            for c in GENERATED_COLUMNS
            if c not in generated
        ]
        if not checked:
            problems.append("ledger_entries lost its check that each leaf names its own seq")
        return problems


def read_ahead(source: Iterator[Batch], depth: int = 2) -> Generator[Batch, None, None]:
    """Iterate ``source`` in a thread, at most ``depth`` batches ahead (bounded memory).

    Closing the returned generator stops the thread before returning, so the connection
    is free for the caller again.
    """
    q: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Batch | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(None)
        except BaseException as exc:  # re-raised in the consumer
            put(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="ledger-verify-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


__all__ = ["Batch", "Reader", "read_ahead"]
