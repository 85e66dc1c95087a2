"""Re-check the whole ledger: sequence, hash chain, leaf hashes, Merkle tree, signed
checkpoints, stored subtree nodes, the head row and the schema that derives the query
columns from the leaves.

The hot path works on whole batches (see ``scan``): hash every leaf, then compare the joined
hashes, the joined ``prev`` fields and the seq range with one comparison each; only a batch
that disagrees is re-read row by row to name the first bad entry. Three things run at once:
a reader thread (the database builds the next batch, GIL released), this thread (leaf hashes
and chain) and, for big ledgers, a tree worker process (Merkle rebuild and signatures, see
``treeworker``). Memory is a few batches whatever the ledger's size.
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
from mailveil.ledger.leaf import GENESIS_PREV, PREFIX, PREV_END, PREV_START
from mailveil.ledger.scan import Batch, Reader, read_ahead
from mailveil.ledger.signing import parse_verifier_key
from mailveil.ledger.tree import TreeChecker, TreeFailure
from mailveil.ledger.treeworker import TreeProcess, TreeResult

Progress = Callable[[int], None]

# Below this many entries a worker process costs more to start than it saves.
TREE_PROCESS_MIN = 200_000

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


@dataclass
class _BadEntry(Exception):
    """The chain check found the first bad entry of a batch."""

    seq: int
    reason: str


@dataclass
class _Scan:
    bad: _BadEntry | None = None
    bad_batch: int | None = None  # lo of the batch holding the bad entry
    last: bytes = GENESIS_PREV  # hash of the last entry checked
    before_last: bytes = GENESIS_PREV


class _Tree:
    """The tree side, in this process or in a worker; same results either way."""

    def __init__(self, settings: Settings, public_key: Ed25519PublicKey, process: bool) -> None:
        self.local = None if process else TreeChecker(settings.origin, public_key)
        self.remote = TreeProcess(settings.origin, public_key) if process else None
        self.failure: TreeFailure | None = None
        self.failure_batch: int | None = None

    def add(self, batch: Batch, computed: list[bytes], joined: bytes) -> bool:
        """Feed a chain-checked batch; False once the tree side has found a problem."""
        if self.remote is not None:
            self.remote.add(batch.lo, joined, batch.checkpoints, batch.nodes)
            return not self.remote.failed()
        assert self.local is not None
        self.failure = self.local.add(batch.lo, computed, batch.checkpoints, batch.nodes)
        if self.failure is not None:
            self.failure_batch = batch.lo
        return self.failure is None

    def result(self) -> TreeResult:
        if self.remote is not None:
            result = self.remote.finish()
            self.failure, self.failure_batch = result.failure, result.failure_batch
            return result
        assert self.local is not None
        t = self.local
        return TreeResult(
            t.frontier, t.size, t.last_good_checkpoint, t.checkpoints, t.nodes,
            self.failure, self.failure_batch,
        )  # fmt: skip

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()


class _Chain:
    """Sequence, leaf hashes and prev links, batch by batch."""

    def __init__(self) -> None:
        self.pos = 0  # next expected seq
        self.last = GENESIS_PREV  # hash of entry pos-1
        self.before_last = GENESIS_PREV  # hash of entry pos-2

    def fast(self, batch: Batch) -> tuple[list[bytes], bytes] | None:
        """Check a batch in bulk: its leaf hashes (and joined), or None to re-read it."""
        count, first, last_seq, leaves_blob, hashes = batch.agg
        n = batch.hi - batch.lo
        if count != n or first != batch.lo or last_seq != batch.hi - 1 or leaves_blob is None:
            return None
        leaves = (b"\x00" + bytes(leaves_blob)).split(b"\n")
        if len(leaves) != n:
            return None
        sha256 = _sha256
        computed = [sha256(leaf).digest() for leaf in leaves]
        joined = b"".join(computed)
        if joined != bytes(hashes):
            return None
        # Each leaf's prev (hex, at a fixed offset) must be the previous entry's hash.
        prevs = b"".join([leaf[_PREV_AT:_PREV_END] for leaf in leaves])
        if prevs != hexlify(self.last + joined[:-32]):
            return None
        self._advance(computed, batch)
        return computed, joined

    def slow(self, batch: Batch, rows: list[tuple[Any, ...]]) -> tuple[list[bytes], bytes]:
        """Row by row: raise _BadEntry for the first bad entry, or accept the batch."""
        last, before = self.last, self.before_last
        computed: list[bytes] = []
        for i, (seq, leaf, stored) in enumerate(rows):
            expect = batch.lo + i
            if seq != expect:
                raise _BadEntry(expect, f"entry {expect} is missing (next stored seq is {seq})")
            leaf = bytes(leaf)
            prev = leaf[_PREV_AT:_PREV_END]
            if not leaf.startswith(_LEAF_START) or prev != last.hex().encode():
                if expect >= 1 and prev == before.hex().encode():
                    raise _BadEntry(
                        expect - 1,
                        f"entry {expect - 1} was inserted: entry {expect} chains to entry "
                        f"{expect - 2}",
                    )
                raise _BadEntry(
                    expect, f"entry {expect}: prev is not the hash of entry {expect - 1}"
                )
            digest = _sha256(leaf).digest()
            if digest != bytes(stored):
                raise _BadEntry(expect, f"entry {expect}: leaf does not match its stored hash")
            computed.append(digest)
            before, last = last, digest
        if len(rows) < batch.hi - batch.lo:
            missing = batch.lo + len(rows)
            raise _BadEntry(missing, f"entry {missing} is missing")
        # The bulk check raised a false alarm (nothing is wrong row by row): carry on.
        self._advance(computed, batch)
        return computed, b"".join(computed)

    def _advance(self, computed: list[bytes], batch: Batch) -> None:
        self.before_last = computed[-2] if len(computed) > 1 else self.last
        self.last = computed[-1]
        self.pos = batch.hi


def verify_ledger(
    bind: Engine | Connection,
    settings: Settings,
    public_key: Ed25519PublicKey | str,
    progress: Progress | None = None,
    batch: int = 10_000,
    threaded: bool = True,
    tree_process: bool | None = None,
) -> VerifyReport:
    """Verify everything; returns a report naming the first bad entry (seq) and why, never
    raises for a bad ledger. ``public_key`` is the checkpoint key or its verifier key string.
    ``progress`` is called with the number of entries checked so far, after each batch.
    ``threaded`` runs the reader thread; ``tree_process`` the tree worker process (default:
    when threaded and the ledger has at least TREE_PROCESS_MIN entries).

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
            report = _run(conn, settings, key, progress, batch, threaded, tree_process)
    else:
        report = _run(bind, settings, key, progress, batch, threaded, tree_process)
    report.seconds = time.perf_counter() - started
    return report


def _run(
    conn: Connection,
    settings: Settings,
    public_key: Ed25519PublicKey,
    progress: Progress | None,
    batch: int,
    threaded: bool,
    tree_process: bool | None,
) -> VerifyReport:
    reader = Reader(conn.connection.dbapi_connection, conn.dialect.name, batch)
    report = VerifyReport()
    db_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    try:
        head = reader.head()
        report.size = int(head[0]) if head else 0
        if tree_process is None:
            tree_process = threaded and report.size >= TREE_PROCESS_MIN
        tree = _Tree(settings, public_key, tree_process)
        try:
            scan = _scan(reader, tree, report, progress, threaded)
            result = tree.result()
        finally:
            tree.close()
        _conclude(report, reader, head, scan, result)
    except db_error as exc:
        # Values of the wrong type or encoding where hashes or notes belong, for instance.
        report.fail(f"ledger data cannot be read as stored ({type(exc).__name__}: {exc})")
    return report


def _scan(
    reader: Reader,
    tree: _Tree,
    report: VerifyReport,
    progress: Progress | None,
    threaded: bool,
) -> _Scan:
    """Stream every batch through the chain check and into the tree, up to the first bad
    entry; stops early too when the tree side reports a problem."""
    chain = _Chain()
    size = report.size
    if size == 0:
        # No entries: still check any (size-0) checkpoint the way a batch would.
        empty = Batch(0, 0, (0, None, None, None, None), reader.checkpoints_in(0, 0), [])
        tree.add(empty, [], b"")
        return _Scan()
    while chain.pos < size:
        source = reader.batches(chain.pos, size)
        stream = read_ahead(source) if threaded else source
        suspect = None
        try:
            for item in stream:
                checked = chain.fast(item)
                if checked is None:
                    suspect = item
                    break
                report.entries = chain.pos
                if not tree.add(item, *checked):
                    return _Scan(last=chain.last, before_last=chain.before_last)
                if progress is not None:
                    progress(chain.pos)
        finally:
            stream.close()  # stops the reader thread: the connection is ours again
        if suspect is None:
            break
        try:
            checked = chain.slow(suspect, reader.rows(suspect.lo, suspect.hi))
        except _BadEntry as bad:
            report.entries = bad.seq
            return _Scan(bad, suspect.lo, chain.last, chain.before_last)
        report.entries = chain.pos
        if not tree.add(suspect, *checked):
            break
        if progress is not None:
            progress(chain.pos)
    return _Scan(last=chain.last, before_last=chain.before_last)


def _conclude(
    report: VerifyReport,
    reader: Reader,
    head: tuple[Any, ...] | None,
    scan: _Scan,
    tree: TreeResult,
) -> None:
    """Report the first problem in ledger order, then the head and leftovers."""
    report.checkpoints, report.nodes = tree.checkpoints, tree.nodes
    tree_first = tree.failure is not None and (
        scan.bad_batch is None or (tree.failure_batch or 0) < scan.bad_batch
    )
    if tree_first and tree.failure is not None:
        report.fail(tree.failure.reason, tree.failure.seq, tree.failure.checkpoint)
        return
    if scan.bad is not None:
        report.fail(scan.bad.reason, scan.bad.seq)
        return
    size = report.size
    report.root = merkle.frontier_root(tree.frontier)
    stray = reader.stray_entry(size)
    if stray == size:
        # An entry just past the head: does it continue the chain, or is the entry before
        # it the odd one out (inserted before the last)?
        leaf = bytes(reader.rows(size, size + 1)[0][1])
        if size > 0 and leaf[_PREV_AT:_PREV_END] == scan.before_last.hex().encode():
            report.fail(
                f"entry {size - 1} was inserted: entry {size} chains to entry {size - 2}",
                size - 1,
            )
    elif head is not None and bytes(head[1]) != scan.last and size > 0:
        if tree.last_good_checkpoint == size:
            # Every entry is covered by a good signed checkpoint: the head is what changed.
            report.fail("ledger_head last_hash is not the last entry's hash")
        else:
            # A well-formed entry replaced the last one.
            report.fail(f"entry {size - 1} is not the entry the head recorded last", size - 1)
    if stray is not None:
        report.fail(f"entry {stray} is outside the ledger's {size} entries", stray)
    if head is not None:
        if bytes(head[2]) != merkle.frontier_pack(tree.frontier):
            report.fail("ledger_head frontier does not match the entries")
        if int(head[3]) > tree.last_good_checkpoint:
            missing = int(head[3])
            report.fail(f"checkpoint {missing} named by the head is missing", None, missing)
    beyond = reader.query(
        "SELECT min(tree_size) FROM ledger_checkpoints WHERE tree_size > ?", (size,)
    )[0][0]
    if beyond is not None:
        report.fail(f"checkpoint at size {beyond} is beyond the ledger", None, int(beyond))
    total = int(reader.query("SELECT count(*) FROM ledger_nodes")[0][0])
    if total != tree.nodes:
        report.fail(f"ledger_nodes holds {total} rows, the tree has {tree.nodes}")
    for problem in reader.schema_problems():
        report.fail(problem)


__all__ = ["TREE_PROCESS_MIN", "VerifyReport", "verify_ledger"]
