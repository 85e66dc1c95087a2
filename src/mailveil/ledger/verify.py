"""Re-check the whole ledger: sequence, hash chain, leaf hashes, Merkle tree, signed
checkpoints, stored subtree nodes and the head row, streaming in seq order.

Speed comes from doing per-row work in C: the database builds each leaf's canonical bytes
(``leaf.leaf_sql``), a reader thread fetches batches (sqlite3 and psycopg release the GIL
while the database works), and the checker hashes a batch with ``map`` and compares whole
tuples at once. Only when a batch disagrees does a per-row Python scan look for the first
bad entry. Memory is a few batches, whatever the ledger's size.
"""

from __future__ import annotations

import base64
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine

from mailveil.config import Settings
from mailveil.ledger import merkle
from mailveil.ledger.append import HEAD_ID, TILE_HEIGHT
from mailveil.ledger.leaf import GENESIS_PREV, leaf_sql
from mailveil.ledger.signing import CheckpointError, format_time, verify_checkpoint

Progress = Callable[[int], None]

_sha256 = hashlib.sha256
_digest = methodcaller("digest")


@dataclass
class VerifyReport:
    ok: bool = True
    entries: int = 0  # entries whose chain link and leaf hash were checked
    checkpoints: int = 0  # checkpoints whose signature and root were checked
    nodes: int = 0  # stored subtree nodes checked
    size: int = 0  # the head's size
    root: bytes | None = None  # recomputed root over every entry checked
    first_bad_seq: int | None = None
    bad_checkpoint: int | None = None  # tree size of the first bad checkpoint, if any
    reason: str | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def fail(self, reason: str, seq: int | None = None, checkpoint: int | None = None) -> None:
        if self.ok:
            self.ok = False
            self.first_bad_seq = seq
            self.bad_checkpoint = checkpoint
            self.reason = reason
        self.problems.append(reason)


@dataclass
class _Batch:
    rows: list[tuple[Any, ...]]
    checkpoints: list[tuple[Any, ...]]
    nodes: list[tuple[Any, ...]]


class _Stop(Exception):
    """The checker found the first bad entry; no need to read further."""


# --- reading -----------------------------------------------------------------------------


class _Reader:
    """Runs the entry scan and the per-batch side queries on one DBAPI connection, so all
    reads share the verifying transaction's snapshot."""

    def __init__(self, dbapi: Any, dialect: str, batch: int) -> None:
        self.dbapi = dbapi
        self.dialect = dialect
        self.batch = batch
        self.param = "?" if dialect == "sqlite" else "%s"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.dbapi.cursor()
        try:
            cur.execute(sql.replace("?", self.param), params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def head(self) -> tuple[Any, ...] | None:
        rows = self.query(
            "SELECT size, last_hash, frontier, checkpoint_size FROM ledger_head WHERE id = ?",
            (HEAD_ID,),
        )
        return rows[0] if rows else None

    def batches(self) -> Iterator[_Batch]:
        sql = (
            # The expression is a constant of this module, never user input.
            f"SELECT seq, {leaf_sql(self.dialect)}, prev_hash, leaf_hash "  # noqa: S608
            "FROM ledger_entries ORDER BY seq"
        )
        if self.dialect == "postgresql":
            # A server-side cursor: the server builds leaves while we hash, memory stays flat.
            cur = self.dbapi.cursor(name="mailveil_ledger_verify")
            cur.itersize = self.batch
        else:
            cur = self.dbapi.cursor()
        try:
            cur.execute(sql)
            done = 0
            while True:
                rows = cur.fetchmany(self.batch)
                if not rows:
                    return
                lo, hi = done, done + len(rows)
                done = hi
                yield _Batch(list(rows), self._checkpoints(lo, hi), self._nodes(lo, hi))
        finally:
            cur.close()

    def _checkpoints(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        # Checkpoints whose tree ends inside this batch (size 0 belongs to the first).
        low = -1 if lo == 0 else lo
        return self.query(
            "SELECT tree_size, root, time_us, note FROM ledger_checkpoints "
            "WHERE tree_size > ? AND tree_size <= ? ORDER BY tree_size",
            (low, hi),
        )

    def _nodes(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        # Stored nodes whose subtree ends inside (lo, hi].
        out: list[tuple[Any, ...]] = []
        level = TILE_HEIGHT
        while (1 << level) <= hi:
            first, last = lo >> level, (hi >> level) - 1
            if last >= first:
                out.extend(
                    self.query(
                        "SELECT level, idx, hash FROM ledger_nodes "
                        "WHERE level = ? AND idx >= ? AND idx <= ? ORDER BY idx",
                        (level, first, last),
                    )
                )
            level += TILE_HEIGHT
        return out


def _threaded(source: Iterator[_Batch], depth: int = 3) -> Iterator[_Batch]:
    """Read ahead in a thread; at most ``depth`` batches wait, so memory stays bounded."""
    q: queue.Queue[_Batch | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(None)
        except BaseException as exc:  # handed to the consumer, re-raised there
            q.put(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # closes the cursor in the thread that used it

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
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


# --- checking ----------------------------------------------------------------------------


class _Checker:
    def __init__(
        self, report: VerifyReport, settings: Settings, public_key: Ed25519PublicKey
    ) -> None:
        self.report = report
        self.settings = settings
        self.public_key = public_key
        self.pos = 0  # next expected seq
        self.last = GENESIS_PREV  # hash of entry pos-1
        self.before_last = GENESIS_PREV  # hash of entry pos-2
        self.frontier: list[bytes] = []
        self.last_good_checkpoint = 0
        self.nodes_seen = 0

    # Rows -------------------------------------------------------------------------------

    def rows(self, batch: _Batch) -> None:
        rows = batch.rows
        n = len(rows)
        seqs, leaves, prevs, stored = zip(*rows, strict=True)
        computed = tuple(map(_digest, map(_sha256, leaves)))
        pos, last = self.pos, self.last
        if (
            seqs != tuple(range(pos, pos + n))
            or prevs[0] != last
            or stored != computed
            or prevs[1:] != computed[:-1]
        ):
            self._diagnose(seqs, prevs, stored, computed)
            raise _Stop
        self._tree(computed, batch)
        self.before_last = computed[-2] if n > 1 else last
        self.last = computed[-1]
        self.pos = pos + n
        self.report.entries = self.pos

    def _diagnose(
        self,
        seqs: tuple[Any, ...],
        prevs: tuple[Any, ...],
        stored: tuple[Any, ...],
        computed: tuple[bytes, ...],
    ) -> None:
        """Find the first bad row of a batch that failed the bulk comparison."""
        last, before = self.last, self.before_last
        for i, seq in enumerate(seqs):
            expect = self.pos + i
            if seq != expect:
                self.report.entries = expect
                self.report.fail(f"entry {expect} is missing (next stored seq is {seq})", expect)
                return
            if prevs[i] != last:
                self.report.entries = expect
                if expect >= 2 and prevs[i] == before:
                    self.report.fail(
                        f"entry {expect - 1} was inserted: entry {expect} chains to entry "
                        f"{expect - 2}",
                        expect - 1,
                    )
                else:
                    self.report.fail(
                        f"entry {expect}: prev_hash is not the hash of entry {expect - 1}", expect
                    )
                return
            if computed[i] != stored[i]:
                self.report.entries = expect
                self.report.fail(
                    f"entry {expect}: contents do not match its leaf hash (altered entry or hash)",
                    expect,
                )
                return
            before, last = last, computed[i]
        raise AssertionError("batch failed the bulk check but no row is bad")

    # Tree -------------------------------------------------------------------------------

    def _tree(self, computed: tuple[bytes, ...], batch: _Batch) -> None:
        """Extend the tree, stopping at each checkpoint size inside the batch."""
        produced: list[tuple[int, int, bytes]] = []
        start = self.pos
        done = 0
        for cp in batch.checkpoints:
            cut = int(cp[0]) - start
            if cut > done:
                self._extend(computed[done:cut], start + done, produced)
                done = cut
            self._checkpoint(cp)
        if done < len(computed):
            self._extend(computed[done:], start + done, produced)
        self._compare_nodes(produced, batch.nodes)

    def _extend(
        self, hashes: tuple[bytes, ...], size: int, produced: list[tuple[int, int, bytes]]
    ) -> None:
        """merkle.extend, also collecting every completed node at a multiple of 8 levels."""
        frontier = self.frontier
        pos, n = 0, len(hashes)
        while pos < n:
            remaining = n - pos
            align = size & -size if size else 1 << remaining.bit_length()
            block = min(align, 1 << (remaining.bit_length() - 1))
            height = block.bit_length() - 1
            level: list[bytes] | tuple[bytes, ...] = hashes[pos : pos + block]
            h = 0
            while len(level) > 1:
                level = merkle.level_up(level)
                h += 1
                if h % TILE_HEIGHT == 0:
                    base = size >> h
                    produced.extend((h, base + j, node) for j, node in enumerate(level))
            node = level[0]
            # Merge into the frontier, noting tile-level nodes completed by merging.
            s = size >> height
            while s & 1:
                node = _sha256(b"\x01" + frontier.pop() + node).digest()
                s >>= 1
                height += 1
                if height % TILE_HEIGHT == 0:
                    produced.append((height, ((size + block) >> height) - 1, node))
            frontier.append(node)
            size += block
            pos += block

    def _compare_nodes(
        self, produced: list[tuple[int, int, bytes]], stored: list[tuple[Any, ...]]
    ) -> None:
        if not produced and not stored:
            return
        want = {(lvl, idx): h for lvl, idx, h in produced}
        have = {(int(lvl), int(idx)): bytes(h) for lvl, idx, h in stored}
        self.nodes_seen += len(have)
        self.report.nodes = self.nodes_seen
        if want != have:
            for key in sorted(set(want) | set(have)):
                if want.get(key) != have.get(key):
                    lvl, idx = key
                    what = "missing" if key not in have else "wrong"
                    self.report.fail(
                        f"ledger_nodes level {lvl} index {idx} is {what} (proofs would be wrong)"
                    )
                    raise _Stop

    def _checkpoint(self, cp: tuple[Any, ...]) -> None:
        tree_size, root, time_us, note = int(cp[0]), bytes(cp[1]), int(cp[2]), str(cp[3])
        here = f"checkpoint at size {tree_size}"
        try:
            parsed = verify_checkpoint(note, self.public_key)
        except CheckpointError as exc:
            self.report.fail(f"{here}: {exc}", checkpoint=tree_size)
            raise _Stop from exc
        mismatch = None
        if parsed.tree_size != tree_size:
            mismatch = "signed size differs from the row"
        elif parsed.root != root:
            mismatch = "signed root differs from the row"
        elif parsed.time_us != time_us:
            mismatch = f"signed time differs from the row ({format_time(time_us)})"
        elif parsed.origin != self.settings.origin:
            mismatch = f"origin {parsed.origin!r} is not this ledger's"
        if mismatch:
            self.report.fail(f"{here}: {mismatch}", checkpoint=tree_size)
            raise _Stop
        if merkle.frontier_root(self.frontier) != root:
            # Entries were rewritten with a consistent chain: only the signature shows it,
            # so the bad entry lies after the last checkpoint that matched.
            self.report.fail(
                f"{here}: the entries do not hash to its signed root; entries "
                f"{self.last_good_checkpoint}..{tree_size - 1} were altered",
                self.last_good_checkpoint,
                tree_size,
            )
            raise _Stop
        self.last_good_checkpoint = tree_size
        self.report.checkpoints += 1

    # Head and leftovers -----------------------------------------------------------------

    def finish(self, reader: _Reader, head: tuple[Any, ...] | None) -> None:
        report = self.report
        size = int(head[0]) if head else 0
        report.size = size
        report.root = merkle.frontier_root(self.frontier)
        if self.pos < size:
            report.fail(f"entry {self.pos} is missing (the head counts {size} entries)", self.pos)
            return
        if self.pos > size:
            report.fail(f"entry {size} is beyond the head's size {size}", size)
            return
        if head is not None:
            if bytes(head[1]) != self.last:
                report.fail("ledger_head last_hash is not the last entry's hash")
            if bytes(head[2]) != merkle.frontier_pack(self.frontier):
                report.fail("ledger_head frontier does not match the entries")
        beyond = reader.query(
            "SELECT tree_size FROM ledger_checkpoints WHERE tree_size > ? ORDER BY tree_size",
            (self.pos,),
        )
        if beyond:
            first = int(beyond[0][0])
            report.fail(f"checkpoint at size {first} is beyond the ledger", None, first)
        if head is not None and int(head[3]) > self.last_good_checkpoint and report.ok:
            report.fail(
                f"checkpoint at size {head[3]} named by the head is missing",
                None,
                int(head[3]),
            )
        total = reader.query("SELECT count(*) FROM ledger_nodes")[0][0]
        if int(total) != self.nodes_seen:
            report.fail(f"ledger_nodes holds {total} rows, the tree has {self.nodes_seen}")
        if size == 0 and report.ok:
            empty = reader.query("SELECT tree_size FROM ledger_checkpoints")
            if empty:
                report.fail("a checkpoint exists but the ledger is empty")


# --- entry point -------------------------------------------------------------------------


def verify_ledger(
    bind: Engine | Connection,
    settings: Settings,
    public_key: Ed25519PublicKey | str,
    progress: Progress | None = None,
    batch: int = 10_000,
    threaded: bool = True,
) -> VerifyReport:
    """Verify everything; never raises for a bad ledger, returns a report naming the first
    bad entry (seq) and why. ``public_key`` is the checkpoint key or its verifier key string.

    Given an Engine, reads in one transaction (REPEATABLE READ on PostgreSQL) so appends
    made meanwhile are not half-seen; given a Connection, reads inside its transaction.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    if isinstance(public_key, str):
        from mailveil.ledger.signing import parse_verifier_key

        public_key = parse_verifier_key(public_key)[1]
    started = time.perf_counter()
    if isinstance(bind, Engine):
        opts = {"isolation_level": "REPEATABLE READ"} if bind.dialect.name == "postgresql" else {}
        with bind.connect().execution_options(**opts) as conn, conn.begin():
            report = _run(conn, settings, public_key, progress, batch, threaded)
    else:
        report = _run(bind, settings, public_key, progress, batch, threaded)
    report.seconds = time.perf_counter() - started
    return report


def _run(
    conn: Connection,
    settings: Settings,
    public_key: Ed25519PublicKey,
    progress: Progress | None,
    batch: int,
    threaded: bool,
) -> VerifyReport:
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"verify_ledger supports sqlite and postgresql, not {dialect}")
    dbapi = conn.connection.dbapi_connection
    reader = _Reader(dbapi, dialect, batch)
    report = VerifyReport()
    checker = _Checker(report, settings, public_key)
    head = reader.head()
    source = reader.batches()
    stream = _threaded(source) if threaded else source
    try:
        for item in stream:
            checker.rows(item)
            if progress is not None:
                progress(checker.pos)
    except _Stop:
        return report
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    checker.finish(reader, head)
    return report


def root_b64(report: VerifyReport) -> str | None:
    return None if report.root is None else base64.b64encode(report.root).decode()


__all__ = ["VerifyReport", "root_b64", "verify_ledger"]
