"""Verifying one range of entries [lo, hi): sequence, leaf hashes, prev links, the tree and
the checkpoints and stored nodes inside it. ``verify`` runs it over the whole ledger, or over
two halves in two processes (``rangeworker``) and joins the results.

The hot path works on whole batches (see ``scan``): hash every leaf, then compare the joined
hashes, the joined ``prev`` fields and the seq range with one comparison each; only a batch
that disagrees is re-read row by row to name the first bad entry. No SQLAlchemy here, so the
worker process starts fast.
"""

from __future__ import annotations

import hashlib
from binascii import hexlify
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailveil.ledger.leaf import GENESIS_PREV, PREFIX, PREV_END, PREV_START
from mailveil.ledger.scan import Batch, Reader, read_ahead
from mailveil.ledger.signing import LedgerKeys
from mailveil.ledger.tree import Entry, Pending, TreeChecker, TreeFailure

Progress = Callable[[int], None]

_sha256 = hashlib.sha256
_LEAF_START = b"\x00" + PREFIX.encode()
PREV_AT, PREV_STOP = 1 + PREV_START, 1 + PREV_END  # prev's hex digits in 0x00 || leaf


@dataclass
class BadEntry(Exception):
    """The first bad entry of a range."""

    seq: int
    reason: str
    # The prev (hex) a mismatched entry named when the entry before the range's first was
    # unknown here: the joining side tells whether the first entry was slipped in.
    prev: str | None = None


@dataclass
class RangeOutcome:
    lo: int
    hi: int
    pos: int = 0  # entries before this were checked
    first_prev: bytes | None = None  # what entry lo names as prev (hex), when lo > 0
    last: bytes = GENESIS_PREV  # hash of entry pos-1
    before_last: bytes | None = GENESIS_PREV  # hash of entry pos-2, if known
    bad: BadEntry | None = None
    bad_batch: int | None = None
    failure: TreeFailure | None = None
    failure_batch: int | None = None
    entries: list[Entry] = field(default_factory=list)  # compact range [lo, pos)
    last_good_checkpoint: int = 0
    checkpoints: int = 0
    pending: list[Pending] = field(default_factory=list)
    nodes: int = 0
    peak_rss_kib: int | None = None  # the worker process's peak memory, where known

    def to_json(self) -> dict[str, Any]:
        def ent(items: list[Entry]) -> list[list[Any]]:
            return [[s, h, d.hex()] for s, h, d in items]

        return {
            "lo": self.lo, "hi": self.hi, "pos": self.pos,
            "first_prev": None if self.first_prev is None
            else self.first_prev.decode("ascii", "replace"),
            "last": self.last.hex(),
            "before_last": None if self.before_last is None else self.before_last.hex(),
            "bad": None if self.bad is None else [self.bad.seq, self.bad.reason, self.bad.prev],
            "bad_batch": self.bad_batch,
            "failure": None if self.failure is None
            else [self.failure.reason, self.failure.seq, self.failure.checkpoint],
            "failure_batch": self.failure_batch,
            "entries": ent(self.entries),
            "last_good_checkpoint": self.last_good_checkpoint,
            "checkpoints": self.checkpoints,
            "pending": [[p.tree_size, p.root.hex(), ent(p.blocks)] for p in self.pending],
            "nodes": self.nodes,
            "peak_rss_kib": self.peak_rss_kib,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RangeOutcome:
        def ent(items: list[list[Any]]) -> list[Entry]:
            return [(int(s), int(h), bytes.fromhex(x)) for s, h, x in items]

        return cls(
            lo=d["lo"], hi=d["hi"], pos=d["pos"],
            first_prev=None if d["first_prev"] is None else d["first_prev"].encode(),
            last=bytes.fromhex(d["last"]),
            before_last=None if d["before_last"] is None else bytes.fromhex(d["before_last"]),
            bad=None if d["bad"] is None else BadEntry(*d["bad"]),
            bad_batch=d["bad_batch"],
            failure=None if d["failure"] is None else TreeFailure(*d["failure"]),
            failure_batch=d["failure_batch"],
            entries=ent(d["entries"]),
            last_good_checkpoint=d["last_good_checkpoint"],
            checkpoints=d["checkpoints"],
            pending=[Pending(s, bytes.fromhex(r), ent(b)) for s, r, b in d["pending"]],
            nodes=d["nodes"],
            peak_rss_kib=d.get("peak_rss_kib"),
        )  # fmt: skip


class _Chain:
    """Sequence, leaf hashes and prev links, batch by batch."""

    def __init__(self, lo: int) -> None:
        self.pos = lo  # next expected seq
        # Hashes of entries pos-1 and pos-2; unknown at the start of a later range, where
        # entry lo's prev is taken as given and checked by whoever joins the ranges.
        self.last: bytes | None = GENESIS_PREV if lo == 0 else None
        self.before_last: bytes | None = GENESIS_PREV if lo == 0 else None
        self.first_prev: bytes | None = None

    def fast(self, batch: Batch) -> tuple[list[bytes], bytes] | None:
        """Check a batch in bulk: its leaf hashes (and joined), or None to re-read it."""
        count, first, last_seq, leaves_blob, hashes = batch.agg
        n = batch.hi - batch.lo
        if count != n or first != batch.lo or last_seq != batch.hi - 1 or leaves_blob is None:
            return None
        leaves = (b"\x00" + bytes(leaves_blob)).split(b"\n")
        if len(leaves) != n or self.last is None:
            return None  # (the first batch of a later range goes the careful way)
        sha256 = _sha256
        computed = [sha256(leaf).digest() for leaf in leaves]
        joined = b"".join(computed)
        if joined != bytes(hashes):
            return None
        # Each leaf's prev (hex, at a fixed offset) must be the previous entry's hash.
        prevs = b"".join([leaf[PREV_AT:PREV_STOP] for leaf in leaves])
        if prevs != hexlify(self.last + joined[:-32]):
            return None
        self._advance(computed, batch)
        return computed, joined

    def slow(self, batch: Batch, rows: list[tuple[Any, ...]]) -> tuple[list[bytes], bytes]:
        """Row by row: raise BadEntry for the first bad entry, or accept the batch."""
        last, before = self.last, self.before_last
        computed: list[bytes] = []
        for i, (seq, leaf, stored) in enumerate(rows):
            expect = batch.lo + i
            if seq != expect:
                raise BadEntry(expect, f"entry {expect} is missing (next stored seq is {seq})")
            leaf = bytes(leaf)
            prev = leaf[PREV_AT:PREV_STOP]
            if last is None:  # entry lo of a later range: its prev is checked on joining
                self.first_prev = prev
                if not leaf.startswith(_LEAF_START):
                    raise BadEntry(expect, f"entry {expect}: leaf does not start with prev")
            elif not leaf.startswith(_LEAF_START) or prev != last.hex().encode():
                if before is not None and expect >= 1 and prev == before.hex().encode():
                    raise BadEntry(
                        expect - 1,
                        f"entry {expect - 1} was inserted: entry {expect} chains to entry "
                        f"{expect - 2}",
                    )
                reason = f"entry {expect}: prev is not the hash of entry {expect - 1}"
                raise BadEntry(
                    expect, reason, None if before is not None else prev.decode("ascii", "replace")
                )
            digest = _sha256(leaf).digest()
            if digest != bytes(stored):
                raise BadEntry(expect, f"entry {expect}: leaf does not match its stored hash")
            computed.append(digest)
            before, last = last, digest
        if len(rows) < batch.hi - batch.lo:
            missing = batch.lo + len(rows)
            raise BadEntry(missing, f"entry {missing} is missing")
        # Either a false alarm of the bulk check or a later range's first batch: carry on.
        self._advance(computed, batch)
        return computed, b"".join(computed)

    def _advance(self, computed: list[bytes], batch: Batch) -> None:
        self.before_last = computed[-2] if len(computed) > 1 else self.last
        self.last = computed[-1]
        self.pos = batch.hi


def verify_range(
    reader: Reader,
    origin: str,
    public_key: LedgerKeys,
    lo: int,
    hi: int,
    progress: Progress | None = None,
    threaded: bool = True,
) -> RangeOutcome:
    """Check entries [lo, hi) in order, stopping at the first problem (bad entry, bad
    checkpoint, bad stored node); ``progress`` gets the next seq after each batch."""
    chain = _Chain(lo)
    tree = TreeChecker(origin, public_key, floor=lo)
    out = RangeOutcome(lo, hi, pos=lo)
    if lo == hi == 0:
        # No entries: still check any (size-0) checkpoint the way a batch would.
        empty = Batch(0, 0, (0, None, None, None, None), reader.checkpoints_in(0, 0), [])
        out.failure = tree.add(0, [], empty.checkpoints, [])
        out.failure_batch = 0 if out.failure else None
    while chain.pos < hi and out.failure is None:
        source = reader.batches(chain.pos, hi)
        stream = read_ahead(source) if threaded else source
        suspect = None
        try:
            for item in stream:
                checked = chain.fast(item)
                if checked is None:
                    suspect = item
                    break
                if not _feed(out, tree, item, checked[0], reader):
                    break
                if progress is not None:
                    progress(chain.pos)
        finally:
            stream.close()  # stops the reader thread: the connection is ours again
        if suspect is None:
            break
        try:
            checked = chain.slow(suspect, reader.rows(suspect.lo, suspect.hi))
        except BadEntry as bad:
            out.bad, out.bad_batch = bad, suspect.lo
            break
        if not _feed(out, tree, suspect, checked[0], reader):
            break
        if progress is not None:
            progress(chain.pos)
    out.pos = out.bad.seq if out.bad is not None else tree.size
    out.first_prev = chain.first_prev
    out.last = chain.last if chain.last is not None else GENESIS_PREV
    out.before_last = chain.before_last
    out.entries = tree.entries
    out.last_good_checkpoint = tree.last_good_checkpoint
    out.checkpoints = tree.checkpoints
    out.pending = tree.pending
    out.nodes = tree.nodes
    return out


def _feed(
    out: RangeOutcome, tree: TreeChecker, batch: Batch, computed: list[bytes], reader: Reader
) -> bool:
    failure = tree.add(batch.lo, computed, batch.checkpoints, batch.nodes)
    if failure is None:
        return True
    inserted = slipped_in(reader, failure.checkpoint) if failure.seq is not None else None
    if inserted is not None:
        out.bad, out.bad_batch = inserted, batch.lo
    else:
        out.failure, out.failure_batch = failure, batch.lo
    return False


def slipped_in(reader: Reader, size: int | None) -> BadEntry | None:
    """When the entries before a checkpoint do not hash to its root: was the last of them
    slipped in? Then entry ``size`` (the next, in the next batch) chains to ``size - 2``,
    and that names the culprit precisely."""
    if size is None or size < 1:
        return None
    rows = {int(r[0]): bytes(r[1]) for r in reader.rows(max(0, size - 2), size + 1)}
    if size not in rows or size - 1 not in rows:
        return None
    named = rows[size][PREV_AT:PREV_STOP]
    if size >= 2 and size - 2 in rows:
        before = _sha256(rows[size - 2]).hexdigest().encode()
    elif size == 1:
        before = GENESIS_PREV.hex().encode()
    else:
        return None
    if named != before or named == _sha256(rows[size - 1]).hexdigest().encode():
        return None
    return BadEntry(
        size - 1, f"entry {size - 1} was inserted: entry {size} chains to entry {size - 2}"
    )


__all__ = [
    "PREV_AT",
    "PREV_STOP",
    "BadEntry",
    "Progress",
    "RangeOutcome",
    "slipped_in",
    "verify_range",
]
