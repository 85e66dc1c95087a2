"""Re-check the whole ledger: sequence, hash chain, leaf hashes, Merkle tree, signed
checkpoints, stored subtree nodes, the head row and the schema that derives the query
columns from the leaves. Returns a report naming the first bad entry.

Small ledgers are checked in this process (``check.verify_range``, with a reader thread
fetching the next batch while this one is hashed). Big ones are split in two: this process
checks [0, m) while a worker process (``rangeworker``) checks [m, n) on the other core; the
halves are then joined (the chain link at m, the second half's checkpoint roots completed
with the first half's tree, subtree nodes that straddle m) and the first problem in ledger
order is reported, exactly as a single pass would. Memory is a few batches per process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from mailveil.config import Settings
from mailveil.ledger.check import PREV_AT, PREV_STOP, RangeOutcome, slipped_in, verify_range
from mailveil.ledger.layout import TILE_HEIGHT
from mailveil.ledger.merkle import frontier_pack
from mailveil.ledger.rangeworker import RangeProcess, WorkerError
from mailveil.ledger.scan import Reader
from mailveil.ledger.signing import LedgerKeys, parse_verifier_key
from mailveil.ledger.tree import Entry, check_root, compare_nodes, complete, root_of

Progress = Callable[[int], None]

# Below this many entries a second process costs more to start than it saves.
SPLIT_MIN = 200_000
# Extra entries this process takes because the worker starts ~0.1 s later (measured).
WORKER_HEAD_START = 40_000


@dataclass
class VerifyReport:
    ok: bool = True
    entries: int = 0  # entries whose chain link and leaf hash were checked
    checkpoints: int = 0  # checkpoints whose signature (and, if reached, root) were checked
    nodes: int = 0  # stored subtree nodes checked
    size: int = 0  # entries the head row counts
    root: bytes | None = None  # recomputed root over every entry, when all were checked
    first_bad_seq: int | None = None
    bad_checkpoint: int | None = None  # tree size of the first bad checkpoint, if any
    reason: str | None = None
    seconds: float = 0.0
    processes: int = 1
    worker_peak_rss_kib: int | None = None  # when split: the worker process's peak memory
    problems: list[str] = field(default_factory=list)

    def fail(self, reason: str, seq: int | None = None, checkpoint: int | None = None) -> None:
        if self.ok:
            self.ok = False
            self.first_bad_seq = seq
            self.bad_checkpoint = checkpoint
            self.reason = reason
        self.problems.append(reason)


@dataclass
class _Whole:
    """Everything the final checks need once every entry has been checked."""

    entries: list[Entry]
    last: bytes
    before_last: bytes | None
    last_good_checkpoint: int
    nodes: int


def verify_ledger(
    bind: Engine | Connection,
    settings: Settings,
    public_key: LedgerKeys | str,
    progress: Progress | None = None,
    batch: int = 10_000,
    threaded: bool = True,
    split: bool | int | None = None,
) -> VerifyReport:
    """Verify everything; returns a report naming the first bad entry (seq) and why, never
    raises for a bad ledger. ``public_key`` is the checkpoint key or its verifier key string.
    ``progress`` is called with the number of entries checked so far, after each batch.

    ``threaded`` allows the reader thread and the second process; ``split`` forces the
    two-process run (True, or the seq where the second half starts) or forbids it (False);
    by default it is used for ledgers of SPLIT_MIN entries or more when a second core looks
    free, given an Engine on a file SQLite database or PostgreSQL (the worker needs its own
    connection).

    Given an Engine, reads in one transaction (REPEATABLE READ on PostgreSQL) so appends made
    meanwhile are not half-seen; given a Connection, reads inside its transaction.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    key = parse_verifier_key(public_key)[1] if isinstance(public_key, str) else public_key
    started = time.perf_counter()
    report = VerifyReport()
    if isinstance(bind, Engine):
        opts = {"isolation_level": "REPEATABLE READ"} if bind.dialect.name == "postgresql" else {}
        with bind.connect().execution_options(**opts) as conn, conn.begin():
            _run(conn, bind, settings, key, report, progress, batch, threaded, split)
    else:
        _run(bind, None, settings, key, report, progress, batch, threaded, split)
    report.seconds = time.perf_counter() - started
    return report


def _run(
    conn: Connection,
    engine: Engine | None,
    settings: Settings,
    key: LedgerKeys,
    report: VerifyReport,
    progress: Progress | None,
    batch: int,
    threaded: bool,
    split: bool | int | None,
) -> None:
    reader = Reader(conn.connection.dbapi_connection, conn.dialect.name, batch)
    db_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    try:
        head = reader.head()
        report.size = size = int(head[0]) if head else 0
        config = _worker_config(conn, engine, settings, key, batch)
        at = _split_point(size, batch, threaded, split, config is not None)
        if at is None or config is None:
            whole = verify_range(reader, settings.origin, key, 0, size, progress, threaded)
            joined = _one(report, whole)
        else:
            report.processes = 2
            joined = _two(report, reader, settings, key, config, at, size, progress)
        if joined is not None:
            _conclude(report, reader, head, joined)
    except db_error as exc:
        # Values of the wrong type or encoding where hashes or notes belong, for instance.
        report.fail(f"ledger data cannot be read as stored ({type(exc).__name__}: {exc})")


def _spare_core() -> bool:
    """Is a second core likely free? (A busy machine makes two processes slower than one.)"""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cpus > 1
    return cpus > 1 and load < cpus - 0.5


def _split_point(
    size: int, batch: int, threaded: bool, split: bool | int | None, possible: bool
) -> int | None:
    if split is False or not possible:
        return None
    if split is None and (not threaded or size < SPLIT_MIN or not _spare_core()):
        return None
    if split is not True and split is not None:
        return split if 0 < split < size else None
    if size < 2:
        return None
    # About halfway, on a batch boundary so both sides read whole batches; this side takes
    # a little more because the worker first has to start (~0.1 s).
    at = (size // 2 + min(size // 10, WORKER_HEAD_START)) // batch * batch
    return at if 0 < at < size else size // 2


def _worker_config(
    conn: Connection, engine: Engine | None, settings: Settings, key: LedgerKeys, batch: int
) -> dict[str, Any] | None:
    """How a worker process reaches the same database, or None if it cannot (a caller's
    connection may hold uncommitted rows; an in-memory SQLite database is private)."""
    if engine is None:
        return None
    url = engine.url
    config: dict[str, Any] = {
        "dialect": conn.dialect.name,
        "origin": settings.origin,
        "public_keys": [
            k.public_bytes_raw().hex() for k in (key if isinstance(key, tuple) else (key,))
        ],
        "batch": batch,
    }
    if conn.dialect.name == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            return None
        config["database"] = url.database
    elif conn.dialect.name == "postgresql":
        config["database"] = url.set(drivername="postgresql").render_as_string(hide_password=False)
        path = conn.exec_driver_sql("SHOW search_path").scalar()
        config["options"] = f"-csearch_path={path}" if path else ""
    else:
        return None
    return config


def _one(report: VerifyReport, out: RangeOutcome) -> _Whole | None:
    report.entries, report.checkpoints, report.nodes = out.pos, out.checkpoints, out.nodes
    if out.failure is not None:
        report.fail(out.failure.reason, out.failure.seq, out.failure.checkpoint)
        return None
    if out.bad is not None:
        report.fail(out.bad.reason, out.bad.seq)
        return None
    return _Whole(out.entries, out.last, out.before_last, out.last_good_checkpoint, out.nodes)


def _two(
    report: VerifyReport,
    reader: Reader,
    settings: Settings,
    key: LedgerKeys,
    config: dict[str, Any],
    at: int,
    size: int,
    progress: Progress | None,
) -> _Whole | None:
    worker = RangeProcess({**config, "lo": at, "hi": size})
    try:

        def both(pos: int) -> None:
            if progress is not None:
                progress(pos + worker.progress - at)

        first = verify_range(reader, settings.origin, key, 0, at, both, threaded=False)
        whole = _one(report, first)
        if whole is None:
            return None  # the first half's problem comes first; the rest does not matter
        while not worker.done(0.1):
            both(at)
        try:
            second = worker.outcome()
        except WorkerError as exc:
            report.fail(f"ledger data cannot be read as stored ({exc})")
            return None
        report.worker_peak_rss_kib = second.peak_rss_kib
        both(at)
    finally:
        worker.close()
    return _join(report, reader, size, at, whole, second)


def _join(
    report: VerifyReport, reader: Reader, size: int, at: int, first: _Whole, second: RangeOutcome
) -> _Whole | None:
    """The second half's findings, in ledger order, on top of a first half that was fine."""
    report.entries = at
    report.checkpoints += second.checkpoints
    # 1. The link between the halves.
    if second.bad is not None and second.bad.seq == at:
        report.fail(second.bad.reason, second.bad.seq)
        return None
    if second.first_prev != first.last.hex().encode():
        if first.before_last is not None and second.first_prev == first.before_last.hex().encode():
            report.fail(f"entry {at - 1} was inserted: entry {at} chains to entry {at - 2}", at - 1)
        else:
            report.fail(f"entry {at}: prev is not the hash of entry {at - 1}", at)
        return None
    # 2. Checkpoint roots the worker could not compute alone, in order.
    last_good = first.last_good_checkpoint
    for pending in second.pending:
        actual = root_of(complete(first.entries, pending.blocks, None))
        failure = check_root(pending.tree_size, pending.root, actual, last_good)
        if failure is not None:
            report.entries = pending.tree_size
            inserted = slipped_in(reader, pending.tree_size)
            if inserted is not None:
                report.fail(inserted.reason, inserted.seq)
            else:
                report.fail(failure.reason, failure.seq, failure.checkpoint)
            return None
        last_good = pending.tree_size
    # 3. Whatever the worker found itself (it stopped at its first problem).
    report.entries = second.pos
    if second.failure is not None:
        report.fail(second.failure.reason, second.failure.seq, second.failure.checkpoint)
        return None
    bad = second.bad
    if bad is not None:
        if bad.seq == at + 1 and bad.prev == first.last.hex():
            # Entry at+1 chains to entry at-1: entry at is the one slipped in.
            report.fail(f"entry {at} was inserted: entry {at + 1} chains to entry {at - 1}", at)
        else:
            report.fail(bad.reason, bad.seq)
        return None
    # 4. Stored nodes that straddle the split: completed only now.
    produced: list[tuple[int, int, bytes]] = []
    entries = complete(first.entries, second.entries, produced)
    have: dict[tuple[int, int], bytes] = {}
    level = TILE_HEIGHT
    while (1 << level) <= size:
        idx = at >> level
        if at % (1 << level) and (idx + 1) << level <= size:
            rows = reader.query(
                f"SELECT {reader.blob('hash')} FROM ledger_nodes "  # noqa: S608
                "WHERE level = ? AND idx = ?",
                (level, idx),
            )
            if rows:
                have[(level, idx)] = bytes(rows[0][0])
        level += TILE_HEIGHT
    failure = compare_nodes({(lvl, idx): h for lvl, idx, h in produced}, have)
    nodes = first.nodes + second.nodes + len(have)
    report.nodes = nodes
    if failure is not None:
        report.fail(failure.reason)
        return None
    before = second.before_last if second.pos - at >= 2 else first.last
    return _Whole(entries, second.last, before, last_good, nodes)


def _conclude(
    report: VerifyReport, reader: Reader, head: tuple[Any, ...] | None, whole: _Whole
) -> None:
    """Every entry checked out: now the head, the rows beyond it, and the schema."""
    size = report.size
    report.root = root_of(whole.entries)
    report.entries = size
    stray = reader.stray_entry(size)
    if stray == size:
        # An entry just past the head: does it continue the chain, or is the entry before
        # it the odd one out (inserted before the last)?
        leaf = bytes(reader.rows(size, size + 1)[0][1])
        before = whole.before_last
        if size > 0 and before is not None and leaf[PREV_AT:PREV_STOP] == before.hex().encode():
            report.fail(
                f"entry {size - 1} was inserted: entry {size} chains to entry {size - 2}",
                size - 1,
            )
    elif head is not None and bytes(head[1]) != whole.last and size > 0:
        if whole.last_good_checkpoint == size:
            # Every entry is covered by a good signed checkpoint: the head is what changed.
            report.fail("ledger_head last_hash is not the last entry's hash")
        else:
            # A well-formed entry replaced the last one.
            report.fail(f"entry {size - 1} is not the entry the head recorded last", size - 1)
    if stray is not None:
        report.fail(f"entry {stray} is outside the ledger's {size} entries", stray)
    if head is not None:
        if bytes(head[2]) != frontier_pack([h for _, _, h in whole.entries]):
            report.fail("ledger_head frontier does not match the entries")
        if int(head[3]) > whole.last_good_checkpoint:
            missing = int(head[3])
            report.fail(f"checkpoint {missing} named by the head is missing", None, missing)
    beyond = reader.query(
        "SELECT min(tree_size) FROM ledger_checkpoints WHERE tree_size > ?", (size,)
    )[0][0]
    if beyond is not None:
        report.fail(f"checkpoint at size {beyond} is beyond the ledger", None, int(beyond))
    total = int(reader.query("SELECT count(*) FROM ledger_nodes")[0][0])
    if total != whole.nodes:
        report.fail(f"ledger_nodes holds {total} rows, the tree has {whole.nodes}")
    for problem in reader.schema_problems():
        report.fail(problem)


__all__ = ["SPLIT_MIN", "VerifyReport", "verify_ledger"]
