"""RFC 9162 Merkle tree hashing, proofs and their verification. Pure functions, no database.

Leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right); the tree over
n leaves splits at the largest power of two below n (RFC 9162 §2.1.1).

A *frontier* is the list of roots of the perfect subtrees along the right edge of a tree of
size n, largest (leftmost) first: one per set bit of n, so at most log2(n)+1 hashes. It is
all an appender needs to extend the tree and compute its root without reading old leaves.

Proof generation takes a ``subtree`` callable ``(start, end) -> MTH(D[start:end])`` so the
caller decides where hashes come from (a list in memory, stored tiles in the database).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32
# The ledger stores the roots of complete subtrees of height 8, 16, 24 ... (ledger_nodes).
TILE_HEIGHT = 8

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"


class ProofError(ValueError):
    """A proof does not verify, or its parameters are out of range."""


def leaf_hash(leaf: bytes) -> bytes:
    return _sha256(_LEAF + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE + left + right).digest()


def _largest_pow2_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def level_up(level: Sequence[bytes]) -> list[bytes]:
    """Hash adjacent pairs of an even-length level (the fastest pure-Python form measured)."""
    pairs = iter(level)
    sha256 = _sha256
    return [sha256(_NODE + left + right).digest() for left, right in zip(pairs, pairs, strict=True)]


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree whose leaf-level hashes are given (length a power of two)."""
    level = list(hashes)
    while len(level) > 1:
        level = level_up(level)
    return level[0]


def root(hashes: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes (any length; empty gives SHA-256 of nothing)."""
    if not hashes:
        return EMPTY_ROOT
    frontier: list[bytes] = []
    extend(frontier, 0, hashes)
    return frontier_root(frontier)


# --- frontier -------------------------------------------------------------------------


Tile = tuple[int, int, bytes]  # (level, index at that level, hash)


def push_subtree(
    frontier: list[bytes], size: int, height: int, node: bytes, tiles: list[Tile] | None = None
) -> None:
    """Add a perfect subtree of 2**height leaves, aligned at ``size`` (size % 2**height == 0),
    to the frontier (in place). With ``tiles``, each completed node at a level that is a
    multiple of ``TILE_HEIGHT`` is noted there (what the ledger stores for proofs)."""
    end = size + (1 << height)
    size >>= height
    while size & 1:
        node = _sha256(_NODE + frontier.pop() + node).digest()
        size >>= 1
        height += 1
        if tiles is not None and height % TILE_HEIGHT == 0:
            tiles.append((height, (end >> height) - 1, node))
    frontier.append(node)


def frontier_push(
    frontier: list[bytes], size: int, leaf: bytes, tiles: list[Tile] | None = None
) -> None:
    """Add one leaf hash to the frontier of a tree of ``size`` leaves (in place)."""
    push_subtree(frontier, size, 0, leaf, tiles)


def extend(frontier: list[bytes], size: int, hashes: Sequence[bytes]) -> int:
    """Append many leaf hashes to a frontier; returns the new size.

    The range is cut into maximal aligned perfect blocks, each hashed level by level in C,
    so the Python work is per block, not per leaf.
    """
    pos = 0
    n = len(hashes)
    while pos < n:
        remaining = n - pos
        # Largest block allowed by alignment (lowest set bit of size) and by what is left.
        align = size & -size if size else 1 << remaining.bit_length()
        block = min(align, 1 << (remaining.bit_length() - 1))
        height = block.bit_length() - 1
        node = perfect_root(hashes[pos : pos + block]) if block > 1 else hashes[pos]
        push_subtree(frontier, size, height, node)
        size += block
        pos += block
    return size


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1]
    for node in reversed(frontier[:-1]):
        acc = _sha256(_NODE + node + acc).digest()
    return acc


def frontier_pack(frontier: Sequence[bytes]) -> bytes:
    return b"".join(frontier)


def frontier_unpack(blob: bytes, size: int) -> list[bytes]:
    count = size.bit_count()
    if len(blob) != count * HASH_SIZE:
        raise ValueError(f"frontier holds {len(blob)} bytes, size {size} needs {count * 32}")
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def perfect_ranges(start: int, end: int) -> list[tuple[int, int]]:
    """Cut [start, end) into maximal aligned perfect subtrees, as (start, height) pairs."""
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        remaining = end - pos
        align = pos & -pos if pos else 1 << remaining.bit_length()
        block = min(align, 1 << (remaining.bit_length() - 1))
        out.append((pos, block.bit_length() - 1))
        pos += block
    return out


# --- proof generation (RFC 9162 §2.1.3.1 and §2.1.4.1) ------------------------------------

Subtree = Callable[[int, int], bytes]


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[0:size]): sibling hashes from the leaf up to the root."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    # Walk top-down recording siblings, then reverse: the proof is bottom-up.
    while end - start > 1:
        k = _largest_pow2_below(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start = start + k
    path.reverse()
    return path


def consistency_path(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1 (empty when the sizes are equal)."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first == second:
        return []
    out: list[bytes] = []
    start, end, m, whole = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                out.append(subtree(start, end))
            break
        k = _largest_pow2_below(n)
        if m <= k:
            out.append(subtree(start + k, end))
            end = start + k
        else:
            out.append(subtree(start, start + k))
            start, m, whole = start + k, m - k, False
    out.reverse()
    return out


def memory_subtree(leaves: Sequence[bytes]) -> Subtree:
    """A ``subtree`` callable over leaf hashes held in memory (tests, small trees)."""

    def subtree(start: int, end: int) -> bytes:
        return root(leaves[start:end])

    return subtree


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies (RFC 9162 §2.1.3.2 steps 1-5)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes] | None, root_hash: bytes
) -> None:
    """Raise ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index`` in ``root_hash``."""
    _check_hash(root_hash, "root")
    computed = root_from_inclusion(index, size, leaf, proof or ())
    if computed != root_hash:
        raise ProofError("inclusion proof does not lead to the given root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes] | None
) -> None:
    """Raise ProofError unless ``proof`` shows tree ``first`` is a prefix of tree ``second``."""
    proof = list(proof or ())
    if first < 0 or second < 0:
        raise ProofError("tree sizes must not be negative")
    if first > second:
        raise ProofError(f"first size {first} is larger than second size {second}")
    if first == 0:
        # Every tree extends the empty one, so such a proof proves nothing; refuse it.
        raise ProofError("no consistency proof from an empty tree")
    if first == second:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if first_root != second_root:
            raise ProofError("equal sizes but different roots")
        return
    _check_hash(first_root, "first root")
    _check_hash(second_root, "second root")
    for p in proof:
        _check_hash(p, "proof hash")
    if not proof:
        raise ProofError("consistency proof is empty")
    # RFC 9162 §2.1.4.2, step by step.
    if first & (first - 1) == 0:
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")


# --- subtrees (the Merkle Tree Certificates draft's generalisation) ---------------------
#
# A subtree [start, end) is valid when start is a multiple of the smallest power of two
# >= end - start: it is then the left part of one aligned node. Its hash is MTH(D[start:end]).
# A subtree inclusion proof is an ordinary inclusion proof inside the subtree; a subtree
# consistency proof shows MTH(D[start:end]) is part of MTH(D[0:size]) and is built like
# RFC 9162's SUBPROOF (which is the start = 0 case).

_RIGHT, _LEFT, _SHARED = 0, 1, 2


def check_subtree(start: int, end: int) -> None:
    if start < 0 or start > end:
        raise ProofError(f"subtree [{start}, {end}) is not a range")
    if start == 0 or start == end:
        return
    width = 1 << (end - start - 1).bit_length()  # bit_ceil(end - start)
    if start % width:
        raise ProofError(f"subtree [{start}, {end}) is not aligned to {width}")


def verify_subtree_inclusion(
    index: int,
    start: int,
    end: int,
    leaf: bytes,
    proof: Sequence[bytes] | None,
    subtree_root: bytes,
) -> None:
    check_subtree(start, end)
    if not start <= index < end:
        raise ProofError(f"leaf index {index} is outside subtree [{start}, {end})")
    verify_inclusion(index - start, end - start, leaf, proof, subtree_root)


def _subtree_walk(start: int, end: int, size: int) -> tuple[list[int], bool]:
    """Replay SUBPROOF's recursion: the sibling kinds top-down, and whether the subtree
    root itself is known to the verifier (True) or is carried in the proof (False)."""
    steps: list[int] = []
    lo, hi, known = 0, size, True
    while not (start == lo and end == hi):
        mid = lo + _largest_pow2_below(hi - lo)
        if end <= mid:
            steps.append(_RIGHT)
            hi = mid
        elif start >= mid:
            steps.append(_LEFT)
            lo = mid
        else:  # start == lo: the left child lies wholly inside the subtree
            steps.append(_SHARED)
            lo = start = mid
            known = False
    return steps, known


def subtree_consistency_path(start: int, end: int, size: int, subtree: Subtree) -> list[bytes]:
    """Proof that subtree [start, end) is part of the tree of ``size`` leaves."""
    check_subtree(start, end)
    if not 0 < end <= size or start == end:
        raise ProofError(f"no subtree proof for [{start}, {end}) in a tree of size {size}")
    out: list[bytes] = []
    lo, hi, cur, known = 0, size, start, True
    while not (cur == lo and end == hi):
        mid = lo + _largest_pow2_below(hi - lo)
        if end <= mid:
            out.append(subtree(mid, hi))
            hi = mid
        elif cur >= mid:
            out.append(subtree(lo, mid))
            lo = mid
        else:
            out.append(subtree(lo, mid))
            lo = cur = mid
            known = False
    if not known:
        out.append(subtree(lo, hi))
    out.reverse()
    return out


def verify_subtree_consistency(
    start: int,
    end: int,
    size: int,
    subtree_root: bytes,
    tree_root: bytes,
    proof: Sequence[bytes] | None,
) -> None:
    """Raise ProofError unless ``proof`` shows MTH(D[start:end]) is inside the tree ``size``."""
    proof = list(proof or ())
    check_subtree(start, end)
    if end > size:
        raise ProofError(f"subtree end {end} is beyond tree size {size}")
    if start == end:
        # The empty subtree is in every tree: only its (fixed) root can be checked.
        if proof:
            raise ProofError("an empty subtree needs an empty proof")
        if subtree_root != EMPTY_ROOT:
            raise ProofError("an empty subtree's root must be the empty root")
        return
    if start == 0 and end == size:
        if proof:
            raise ProofError("the whole tree needs an empty proof")
        if subtree_root != tree_root:
            raise ProofError("subtree is the whole tree but the roots differ")
        return
    if not proof:
        raise ProofError("subtree consistency proof is empty")
    steps, known = _subtree_walk(start, end, size)
    if len(proof) != len(steps) + (0 if known else 1):
        raise ProofError(f"subtree consistency proof has {len(proof)} hashes, not the right count")
    _check_hash(subtree_root, "subtree root")
    for p in proof:
        _check_hash(p, "proof hash")
    pos = 0 if known else 1
    fr = sr = subtree_root if known else proof[0]
    for step in reversed(steps):
        p = proof[pos]
        pos += 1
        if step == _RIGHT:
            sr = node_hash(sr, p)
        elif step == _LEFT:
            sr = node_hash(p, sr)
        else:
            fr = node_hash(p, fr)
            sr = node_hash(p, sr)
    if fr != subtree_root:
        raise ProofError("subtree consistency proof does not lead to the subtree root")
    if sr != tree_root:
        raise ProofError("subtree consistency proof does not lead to the tree root")


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TILE_HEIGHT",
    "ProofError",
    "Tile",
    "check_subtree",
    "consistency_path",
    "extend",
    "frontier_pack",
    "frontier_push",
    "frontier_root",
    "frontier_unpack",
    "inclusion_path",
    "leaf_hash",
    "level_up",
    "memory_subtree",
    "node_hash",
    "perfect_ranges",
    "perfect_root",
    "push_subtree",
    "root",
    "root_from_inclusion",
    "subtree_consistency_path",
    "verify_consistency",
    "verify_inclusion",
    "verify_subtree_consistency",
    "verify_subtree_inclusion",
]
