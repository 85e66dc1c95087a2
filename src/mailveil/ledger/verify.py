"""Re-check the whole ledger: sequence, hash chain, leaf hashes, Merkle tree, signed
checkpoints, stored subtree nodes, the head row and the schema that derives the query
columns from the leaves.

The hot path works on whole batches (see ``scan``): hash every leaf with ``map`` (C), then
compare the joined hashes, the joined ``prev`` fields and the seq range with one comparison
each. Only a batch that disagrees is re-read row by row to name the first bad entry.
Memory is a few batches whatever the ledger's size.
"""

from __future__ import annotations

import hashlib
import time
from binascii import hexlify
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine

from mailveil.config import Settings
from mailveil.ledger import merkle
from mailveil.ledger.append import TILE_HEIGHT
from mailveil.ledger.leaf import GENESIS_PREV, PREFIX, PREV_END, PREV_START
from mailveil.ledger.scan import Batch, Reader, read_ahead
from mailveil.ledger.signing import CheckpointError, parse_verifier_key, verify_checkpoint

Progress = Callable[[int], None]

_sha256 = hashlib.sha256
_LEAF_START = b"\x00" + PREFIX.encode()
_PREV_AT, _PREV_END = 1 + PREV_START, 1 + PREV_END  # in 0x00 || leaf


@dataclass
class VerifyReport:
    ok: bool = True
    entries: int = 0  # entries whose chain link and leaf hash were checked
    checkpoints: int = 0  # checkpoints whose signature and root were checked
    nodes: int = 0  # stored subtree nodes checked
    size: int = 0  # entries the head row counts
    root: bytes | None = None  # recomputed root over the entries checked
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


class _Stop(Exception):
    """Verification found the first problem; nothing further is read."""


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

    # Entries ----------------------------------------------------------------------------

    def fast(self, batch: Batch) -> bool:
        """Check a batch in bulk; False means "re-read it row by row"."""
        count, first, last_seq, leaves_blob, hashes = batch.agg
        n = batch.hi - batch.lo
        if count != n or first != batch.lo or last_seq != batch.hi - 1 or leaves_blob is None:
            return False
        leaves = (b"\x00" + bytes(leaves_blob)).split(b"\n")
        if len(leaves) != n:
            return False
        sha256 = _sha256
        computed = [sha256(leaf).digest() for leaf in leaves]
        joined = b"".join(computed)
        if joined != bytes(hashes):
            return False
        # Each leaf's prev (hex, at a fixed offset) must be the previous entry's hash.
        prevs = b"".join([leaf[_PREV_AT:_PREV_END] for leaf in leaves])
        if prevs != hexlify(self.last + joined[:-32]):
            return False
        self._accept(computed, batch)
        return True

    def slow(self, batch: Batch, rows: list[tuple[Any, ...]]) -> None:
        """Row by row: name the first bad entry (raise _Stop), or accept the batch."""
        last, before = self.last, self.before_last
        computed: list[bytes] = []
        for i, (seq, leaf, stored) in enumerate(rows):
            expect = batch.lo + i
            if seq != expect:
                self._bad(expect, f"entry {expect} is missing (next stored seq is {seq})")
            leaf = bytes(leaf)
            prev = leaf[_PREV_AT:_PREV_END]
            if not leaf.startswith(_LEAF_START) or prev != last.hex().encode():
                if expect >= 1 and prev == before.hex().encode():
                    self._bad(
                        expect - 1,
                        f"entry {expect - 1} was inserted: entry {expect} chains to entry "
                        f"{expect - 2}",
                    )
                self._bad(expect, f"entry {expect}: prev is not the hash of entry {expect - 1}")
            digest = _sha256(leaf).digest()
            if digest != bytes(stored):
                self._bad(expect, f"entry {expect}: leaf does not match its stored hash")
            computed.append(digest)
            before, last = last, digest
        if len(rows) < batch.hi - batch.lo:
            missing = batch.lo + len(rows)
            self._bad(missing, f"entry {missing} is missing")
        # A false alarm of the bulk check (nothing wrong row by row): carry on.
        self._accept(computed, batch)

    def _bad(self, seq: int, reason: str) -> None:
        self.report.entries = seq
        self.report.fail(reason, seq)
        raise _Stop

    def _accept(self, computed: list[bytes], batch: Batch) -> None:
        self._tree(computed, batch)
        self.before_last = computed[-2] if len(computed) > 1 else self.last
        self.last = computed[-1]
        self.pos = batch.hi
        self.report.entries = self.pos

    # Tree -------------------------------------------------------------------------------

    def _tree(self, computed: list[bytes], batch: Batch) -> None:
        """Extend the tree, pausing at each checkpoint size inside the batch."""
        produced: list[tuple[int, int, bytes]] = []
        done = 0
        for cp in batch.checkpoints:
            cut = int(cp[0]) - batch.lo
            if cut > done:
                self._extend(computed[done:cut], batch.lo + done, produced)
                done = cut
            self._checkpoint(cp)
        if done < len(computed):
            self._extend(computed[done:], batch.lo + done, produced)
        self._compare_nodes(produced, batch.nodes)

    def _extend(
        self, hashes: list[bytes], size: int, produced: list[tuple[int, int, bytes]]
    ) -> None:
        """merkle.extend, also collecting every completed node at a multiple of 8 levels."""
        frontier = self.frontier
        pos, n = 0, len(hashes)
        while pos < n:
            remaining = n - pos
            align = size & -size if size else 1 << remaining.bit_length()
            block = min(align, 1 << (remaining.bit_length() - 1))
            height = 0
            level = hashes[pos : pos + block]
            while len(level) > 1:
                level = merkle.level_up(level)
                height += 1
                if height % TILE_HEIGHT == 0:
                    base = size >> height
                    produced.extend((height, base + j, node) for j, node in enumerate(level))
            node = level[0]
            s = size >> height
            while s & 1:  # merge into the frontier, noting tile-level nodes it completes
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
        have = {(int(lvl), int(idx)): bytes(h) for lvl, idx, h in stored}
        self.nodes_seen += len(have)
        self.report.nodes = self.nodes_seen
        want = {(lvl, idx): h for lvl, idx, h in produced}
        if want == have:
            return
        lvl, idx = min(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        what = "missing" if (lvl, idx) not in have else "wrong"
        self.report.fail(f"ledger_nodes level {lvl} index {idx} is {what} (proofs would fail)")
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
            mismatch = "its signed size differs from its row"
        elif parsed.root != root:
            mismatch = "its signed root differs from its row"
        elif parsed.time_us != time_us:
            mismatch = "its signed time differs from its row"
        elif parsed.origin != self.settings.origin:
            mismatch = f"origin {parsed.origin!r} is not this ledger's"
        if mismatch:
            self.report.fail(f"{here}: {mismatch}", checkpoint=tree_size)
            raise _Stop
        if merkle.frontier_root(self.frontier) != root:
            # The chain is consistent yet the tree is not what was signed: entries after the
            # last matching checkpoint were rewritten with recomputed hashes.
            self.report.fail(
                f"{here}: the entries do not hash to its signed root; entries "
                f"{self.last_good_checkpoint}..{tree_size - 1} were rewritten",
                self.last_good_checkpoint,
                tree_size,
            )
            raise _Stop
        self.last_good_checkpoint = tree_size
        self.report.checkpoints += 1

    # Head and leftovers -----------------------------------------------------------------

    def finish(self, reader: Reader, head: tuple[Any, ...] | None) -> None:
        report = self.report
        size = report.size
        report.root = merkle.frontier_root(self.frontier)
        stray = reader.stray_entry(size)
        if stray == size:
            # An entry just past the head: does it continue the chain, or is the entry
            # before it the odd one out (inserted before the last)?
            leaf = bytes(reader.rows(size, size + 1)[0][1])
            prev = leaf[_PREV_AT:_PREV_END]
            if size > 0 and prev == self.before_last.hex().encode():
                report.fail(
                    f"entry {size - 1} was inserted: entry {size} chains to entry {size - 2}",
                    size - 1,
                )
        elif head is not None and bytes(head[1]) != self.last and size > 0:
            if self.last_good_checkpoint == size:
                # Every entry is covered by a good signed checkpoint: the head is what changed.
                report.fail("ledger_head last_hash is not the last entry's hash")
            else:
                # A well-formed entry replaced the last one.
                report.fail(f"entry {size - 1} is not the entry the head recorded last", size - 1)
        if stray is not None:
            report.fail(f"entry {stray} is outside the ledger's {size} entries", stray)
        if head is not None:
            if bytes(head[2]) != merkle.frontier_pack(self.frontier):
                report.fail("ledger_head frontier does not match the entries")
            if int(head[3]) > self.last_good_checkpoint:
                missing = int(head[3])
                report.fail(f"checkpoint {missing} named by the head is missing", None, missing)
        beyond = reader.query(
            "SELECT min(tree_size) FROM ledger_checkpoints WHERE tree_size > ?", (size,)
        )[0][0]
        if beyond is not None:
            report.fail(f"checkpoint at size {beyond} is beyond the ledger", None, int(beyond))
        total = int(reader.query("SELECT count(*) FROM ledger_nodes")[0][0])
        if total != self.nodes_seen:
            report.fail(f"ledger_nodes holds {total} rows, the tree has {self.nodes_seen}")
        for problem in reader.schema_problems():
            report.fail(problem)


def verify_ledger(
    bind: Engine | Connection,
    settings: Settings,
    public_key: Ed25519PublicKey | str,
    progress: Progress | None = None,
    batch: int = 10_000,
    threaded: bool = True,
) -> VerifyReport:
    """Verify everything; returns a report naming the first bad entry (seq) and why, never
    raises for a bad ledger. ``public_key`` is the checkpoint key or its verifier key string.
    ``progress`` is called with the number of entries checked so far, after each batch.

    Given an Engine, reads in one transaction (REPEATABLE READ on PostgreSQL) so appends made
    meanwhile are not half-seen; given a Connection, reads inside its transaction.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    key = parse_verifier_key(public_key)[1] if isinstance(public_key, str) else public_key
    started = time.perf_counter()
    if isinstance(bind, Engine):
        opts = {"isolation_level": "REPEATABLE READ"} if bind.dialect.name == "postgresql" else {}
        with bind.connect().execution_options(**opts) as conn, conn.begin():
            report = _run(conn, settings, key, progress, batch, threaded)
    else:
        report = _run(bind, settings, key, progress, batch, threaded)
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
    reader = Reader(conn.connection.dbapi_connection, conn.dialect.name, batch)
    report = VerifyReport()
    checker = _Checker(report, settings, public_key)
    db_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    try:
        _check(reader, checker, report, progress, threaded)
    except db_error as exc:
        # Values of the wrong type or encoding where hashes or notes belong, for instance.
        report.fail(f"ledger data cannot be read as stored ({type(exc).__name__}: {exc})")
    return report


def _check(
    reader: Reader,
    checker: _Checker,
    report: VerifyReport,
    progress: Progress | None,
    threaded: bool,
) -> None:
    head = reader.head()
    report.size = size = int(head[0]) if head else 0
    try:
        while checker.pos < size:
            source = reader.batches(checker.pos, size)
            stream = read_ahead(source) if threaded else source
            suspect = None
            try:
                for item in stream:
                    if not checker.fast(item):
                        suspect = item
                        break
                    if progress is not None:
                        progress(checker.pos)
            finally:
                stream.close()  # stops the reader thread: the connection is ours again
            if suspect is None:
                break
            checker.slow(suspect, reader.rows(suspect.lo, suspect.hi))
            if progress is not None:
                progress(checker.pos)
        if size == 0:
            # No entries: still check any (size-0) checkpoint the way a batch would.
            empty = Batch(0, 0, (0, None, None, None, None, None), reader.checkpoints_in(0, 0), [])
            checker._tree([], empty)
    except _Stop:
        return
    checker.finish(reader, head)


__all__ = ["VerifyReport", "verify_ledger"]
