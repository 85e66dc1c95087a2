"""Rebuilding the Merkle tree from verified leaf hashes and checking what was stored and
signed along the way: every checkpoint (signature, row, root) and every stored subtree node.

No database here. The tree over entries ``[floor, size)`` is kept as a *compact range*: the
maximal aligned perfect subtrees covering it, as (start, height, hash), left to right. With
floor 0 that is the RFC 9162 frontier, enough for the root. A checker with floor > 0 works on
the second part of a ledger split between two processes (``verify``): it cannot know roots,
so it hands each checkpoint's compact range back to be completed with the first part's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mailveil.ledger import merkle
from mailveil.ledger.merkle import TILE_HEIGHT
from mailveil.ledger.signing import CheckpointError, LedgerKeys, verify_checkpoint_any

_sha256 = hashlib.sha256

Entry = tuple[int, int, bytes]  # start, height, hash of an aligned perfect subtree
Node = tuple[int, int, bytes]  # level, index, hash of a completed tile-level subtree


@dataclass(frozen=True)
class TreeFailure:
    reason: str
    seq: int | None = None  # first bad entry, when the tree can tell
    checkpoint: int | None = None  # tree size of the bad checkpoint, if one is to blame


@dataclass(frozen=True)
class Pending:
    """A checkpoint whose signature and row checked out but whose root needs the entries
    before ``floor``: its root must equal ``complete(prefix, blocks)``."""

    tree_size: int
    root: bytes
    blocks: list[Entry]


def push(entries: list[Entry], block: Entry, floor: int, produced: list[Node] | None) -> None:
    """Append an aligned block to a compact range, merging siblings at or after ``floor``
    and noting completed tile-level nodes."""
    start, height, node = block
    while entries:
        left_start, left_height, left = entries[-1]
        if left_height != height or left_start < floor or left_start % (2 << height):
            break
        entries.pop()
        node = _sha256(b"\x01" + left + node).digest()
        start, height = left_start, height + 1
        if produced is not None and height % TILE_HEIGHT == 0:
            produced.append((height, start >> height, node))
    entries.append((start, height, node))


def root_of(entries: list[Entry]) -> bytes:
    return merkle.frontier_root([h for _, _, h in entries])


def complete(prefix: list[Entry], blocks: list[Entry], produced: list[Node] | None) -> list[Entry]:
    """The compact range of [0, end) from that of [0, m) and the blocks of [m, end)."""
    entries = list(prefix)
    for block in blocks:
        push(entries, block, 0, produced)
    return entries


class TreeChecker:
    def __init__(self, origin: str, public_key: LedgerKeys, floor: int = 0) -> None:
        self.origin = origin
        self.public_key = public_key
        self.floor = floor
        self.size = floor
        self.entries: list[Entry] = []
        self.last_good_checkpoint = 0
        self.checkpoints = 0  # fully checked (floor 0) or signature-checked (floor > 0)
        self.pending: list[Pending] = []
        self.nodes = 0

    def add(
        self,
        lo: int,
        computed: list[bytes],
        checkpoints: list[tuple[Any, ...]],
        nodes: list[tuple[Any, ...]],
    ) -> TreeFailure | None:
        """Leaves ``lo .. lo+len-1`` (already chain-checked), the checkpoints whose size falls
        in (lo, lo+len] (or is 0, for the first batch), the stored nodes that end in that
        range."""
        if lo != self.size:
            raise ValueError(f"tree batches out of order: expected {self.size}, got {lo}")
        produced: list[Node] = []
        done = 0
        for cp in checkpoints:
            cut = int(cp[0]) - lo
            if cut > done:
                self._extend(computed[done:cut], produced)
                done = cut
            failure = self._checkpoint(cp)
            if failure:
                return failure
        if done < len(computed):
            self._extend(computed[done:], produced)
        return self._compare_nodes(produced, nodes)

    def root(self) -> bytes:
        return root_of(self.entries)

    def _extend(self, hashes: list[bytes], produced: list[Node]) -> None:
        """Add leaf hashes as maximal aligned blocks, each hashed level by level."""
        size = self.size
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
            push(self.entries, (size, height, level[0]), self.floor, produced)
            size += block
            pos += block
        self.size = size

    def _compare_nodes(
        self, produced: list[Node], stored: list[tuple[Any, ...]]
    ) -> TreeFailure | None:
        # Nodes reaching left of the floor are completed (and checked) by whoever joins the
        # two parts, not here.
        have = {
            (int(lvl), int(idx)): bytes(h)
            for lvl, idx, h in stored
            if int(idx) << int(lvl) >= self.floor
        }
        self.nodes += len(have)
        want = {(lvl, idx): h for lvl, idx, h in produced}
        return compare_nodes(want, have)

    def _checkpoint(self, cp: tuple[Any, ...]) -> TreeFailure | None:
        tree_size, root, time_us, note = int(cp[0]), bytes(cp[1]), int(cp[2]), str(cp[3])
        here = f"checkpoint at size {tree_size}"
        try:
            parsed = verify_checkpoint_any(note, self.public_key)
        except CheckpointError as exc:
            return TreeFailure(f"{here}: {exc}", checkpoint=tree_size)
        mismatch = None
        if parsed.tree_size != tree_size:
            mismatch = "its signed size differs from its row"
        elif parsed.root != root:
            mismatch = "its signed root differs from its row"
        elif parsed.time_us != time_us:
            mismatch = "its signed time differs from its row"
        elif parsed.origin != self.origin:
            mismatch = f"origin {parsed.origin!r} is not this ledger's"
        if mismatch:
            return TreeFailure(f"{here}: {mismatch}", checkpoint=tree_size)
        self.checkpoints += 1
        if self.floor:
            self.pending.append(Pending(tree_size, root, list(self.entries)))
            return None
        failure = check_root(tree_size, root, self.root(), self.last_good_checkpoint)
        if failure is None:
            self.last_good_checkpoint = tree_size
        return failure


def check_root(tree_size: int, signed: bytes, actual: bytes, last_good: int) -> TreeFailure | None:
    if actual == signed:
        return None
    # The chain is consistent yet the tree is not what was signed: entries after the last
    # matching checkpoint were rewritten with recomputed hashes.
    return TreeFailure(
        f"checkpoint at size {tree_size}: the entries do not hash to its signed root; "
        f"entries {last_good}..{tree_size - 1} were rewritten",
        last_good,
        tree_size,
    )


def compare_nodes(
    want: dict[tuple[int, int], bytes], have: dict[tuple[int, int], bytes]
) -> TreeFailure | None:
    if want == have:
        return None
    lvl, idx = min(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    what = "missing" if (lvl, idx) not in have else "wrong"
    return TreeFailure(f"ledger_nodes level {lvl} index {idx} is {what} (proofs would fail)")


__all__ = [
    "Entry",
    "Pending",
    "TreeChecker",
    "TreeFailure",
    "check_root",
    "compare_nodes",
    "complete",
    "push",
    "root_of",
]
