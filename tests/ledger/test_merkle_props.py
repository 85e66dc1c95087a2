"""Merkle functions against the RFC 9162 definitions, on random trees."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from mailveil.ledger import merkle


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _mth(hashes: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 §2.1.1, recursively."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return merkle.node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    bad = list(proof)
    bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
    return bad


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), cut=st.integers(0, 300))
def test_root_frontier_and_ranges_agree_with_the_definition(n: int, cut: int) -> None:
    leaves = _leaves(n)
    assert merkle.root(leaves) == _mth(leaves)
    cut = min(cut, n)
    frontier: list[bytes] = []
    size = merkle.extend(frontier, 0, leaves[:cut])
    for leaf in leaves[cut:]:
        merkle.frontier_push(frontier, size, leaf)
        size += 1
    assert size == n and merkle.frontier_root(frontier) == _mth(leaves)
    assert merkle.frontier_unpack(merkle.frontier_pack(frontier), n) == frontier
    ranges = merkle.perfect_ranges(cut, n)
    assert sum(1 << h for _, h in ranges) == n - cut
    assert all(start % (1 << h) == 0 for start, h in ranges)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 100))
def test_generated_proofs_verify_and_altered_ones_do_not(data: st.DataObject, n: int) -> None:
    leaves = _leaves(n)
    subtree = merkle.memory_subtree(leaves)
    root = _mth(leaves)
    index = data.draw(st.integers(0, n - 1))
    path = merkle.inclusion_path(index, n, subtree)
    merkle.verify_inclusion(index, n, leaves[index], path, root)
    if path:
        spot = data.draw(st.integers(0, len(path) - 1))
        for bad in (_flip(path, spot), path[:-1], [*path, path[0]]):
            try:
                merkle.verify_inclusion(index, n, leaves[index], bad, root)
            except merkle.ProofError:
                continue
            raise AssertionError("an altered inclusion proof verified")
    first = data.draw(st.integers(1, n))
    proof = merkle.consistency_path(first, n, subtree)
    merkle.verify_consistency(first, n, _mth(leaves[:first]), root, proof)
    if proof:
        spot = data.draw(st.integers(0, len(proof) - 1))
        try:
            merkle.verify_consistency(first, n, _mth(leaves[:first]), root, _flip(proof, spot))
        except merkle.ProofError:
            pass
        else:
            raise AssertionError("an altered consistency proof verified")


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 100))
def test_subtree_proofs(data: st.DataObject, n: int) -> None:
    leaves = _leaves(n)
    subtree = merkle.memory_subtree(leaves)
    height = data.draw(st.integers(0, max(0, (n - 1).bit_length())))
    width = 1 << height
    start = data.draw(st.integers(0, (n - 1) // width)) * width
    end = data.draw(st.integers(start + 1, min(n, start + width)))
    sub_root = _mth(leaves[start:end])
    merkle.check_subtree(start, end)
    proof = merkle.subtree_consistency_path(start, end, n, subtree)
    merkle.verify_subtree_consistency(start, end, n, sub_root, _mth(leaves), proof)
    index = data.draw(st.integers(start, end - 1))
    path = merkle.inclusion_path(
        index - start, end - start, merkle.memory_subtree(leaves[start:end])
    )
    merkle.verify_subtree_inclusion(index, start, end, leaves[index], path, sub_root)
    if proof:
        spot = data.draw(st.integers(0, len(proof) - 1))
        try:
            merkle.verify_subtree_consistency(
                start, end, n, sub_root, _mth(leaves), _flip(proof, spot)
            )
        except merkle.ProofError:
            pass
        else:
            raise AssertionError("an altered subtree proof verified")
