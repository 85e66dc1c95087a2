"""Rebuilding the Merkle tree from verified leaf hashes and checking what was stored and
signed along the way: every checkpoint (signature, row, root) and every stored subtree node.

No database here: ``verify`` feeds it batches in order, in-process or through the tree
worker process (``treeworker``), which runs this same code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mailveil.ledger import merkle
from mailveil.ledger.merkle import TILE_HEIGHT
from mailveil.ledger.signing import CheckpointError, verify_checkpoint

_sha256 = hashlib.sha256


@dataclass(frozen=True)
class TreeFailure:
    reason: str
    seq: int | None = None  # first bad entry, when the tree can tell
    checkpoint: int | None = None  # tree size of the bad checkpoint, if one is to blame


class TreeChecker:
    def __init__(self, origin: str, public_key: Ed25519PublicKey) -> None:
        self.origin = origin
        self.public_key = public_key
        self.size = 0
        self.frontier: list[bytes] = []
        self.last_good_checkpoint = 0
        self.checkpoints = 0
        self.nodes = 0

    def add(
        self,
        lo: int,
        computed: list[bytes],
        checkpoints: list[tuple[Any, ...]],
        nodes: list[tuple[Any, ...]],
    ) -> TreeFailure | None:
        """Leaves ``lo .. lo+len-1`` (already chain-checked), the checkpoints whose size falls
        in (lo, lo+len] (or 0 for the first batch), the stored nodes that end in that range."""
        if lo != self.size:
            raise ValueError(f"tree batches out of order: expected {self.size}, got {lo}")
        produced: list[tuple[int, int, bytes]] = []
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
        return merkle.frontier_root(self.frontier)

    def _extend(self, hashes: list[bytes], produced: list[tuple[int, int, bytes]]) -> None:
        """merkle.extend, also collecting every completed node at a multiple of 8 levels."""
        frontier, size = self.frontier, self.size
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
        self.size = size

    def _compare_nodes(
        self, produced: list[tuple[int, int, bytes]], stored: list[tuple[Any, ...]]
    ) -> TreeFailure | None:
        have = {(int(lvl), int(idx)): bytes(h) for lvl, idx, h in stored}
        self.nodes += len(have)
        want = {(lvl, idx): h for lvl, idx, h in produced}
        if want == have:
            return None
        lvl, idx = min(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        what = "missing" if (lvl, idx) not in have else "wrong"
        return TreeFailure(f"ledger_nodes level {lvl} index {idx} is {what} (proofs would fail)")

    def _checkpoint(self, cp: tuple[Any, ...]) -> TreeFailure | None:
        tree_size, root, time_us, note = int(cp[0]), bytes(cp[1]), int(cp[2]), str(cp[3])
        here = f"checkpoint at size {tree_size}"
        try:
            parsed = verify_checkpoint(note, self.public_key)
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
        if self.root() != root:
            # The chain is consistent yet the tree is not what was signed: entries after the
            # last matching checkpoint were rewritten with recomputed hashes.
            return TreeFailure(
                f"{here}: the entries do not hash to its signed root; entries "
                f"{self.last_good_checkpoint}..{tree_size - 1} were rewritten",
                self.last_good_checkpoint,
                tree_size,
            )
        self.last_good_checkpoint = tree_size
        self.checkpoints += 1
        return None


__all__ = ["TreeChecker", "TreeFailure"]
