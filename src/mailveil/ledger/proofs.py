"""Inclusion and consistency proofs from the database, as JSON-ready dicts (hex hashes).

Subtree hashes come from the stored nodes of complete 2**8, 2**16, ... leaf subtrees
(``ledger_nodes``) and, below that, from leaf hashes read in one range query, so a proof
reads O(log n) small ranges, never the whole tree.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from mailveil.errors import InvalidInput, LedgerCorrupt, NotFound
from mailveil.ledger import merkle
from mailveil.ledger.append import checkpoint_at, latest_checkpoint, ledger_size
from mailveil.ledger.layout import TILE_HEIGHT
from mailveil.ledger.models import LedgerEntry, LedgerNode

_entries = cast(Table, LedgerEntry.__table__)
_nodes = cast(Table, LedgerNode.__table__)


class DbTree:
    """Subtree hashes of the ledger's Merkle tree, read from the database."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._cache: dict[tuple[int, int], bytes] = {}

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        rows = self.session.execute(
            select(_entries.c.seq, _entries.c.leaf_hash)
            .where(_entries.c.seq >= start, _entries.c.seq < end)
            .order_by(_entries.c.seq)
        ).all()
        if len(rows) != end - start or (rows and int(rows[0][0]) != start):
            raise LedgerCorrupt(f"ledger entries {start}..{end - 1} are not all present")
        return [bytes(r[1]) for r in rows]

    def _stored(self, level: int, first: int, count: int) -> list[bytes] | None:
        rows = self.session.execute(
            select(_nodes.c.idx, _nodes.c.hash)
            .where(_nodes.c.level == level, _nodes.c.idx >= first, _nodes.c.idx < first + count)
            .order_by(_nodes.c.idx)
        ).all()
        if len(rows) != count:
            return None  # not stored (yet): the caller falls back to a lower level
        return [bytes(r[1]) for r in rows]

    def perfect(self, start: int, height: int) -> bytes:
        """Root of the perfect subtree of 2**height leaves starting at ``start``."""
        key = (start, height)
        if key in self._cache:
            return self._cache[key]
        level = (height // TILE_HEIGHT) * TILE_HEIGHT
        while True:
            if level == 0:
                hashes = self.leaf_hashes(start, start + (1 << height))
                break
            stored = self._stored(level, start >> level, 1 << (height - level))
            if stored is not None:
                hashes = stored
                break
            level -= TILE_HEIGHT
        value = merkle.perfect_root(hashes)
        self._cache[key] = value
        return value

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for an aligned range, as RFC 9162 proofs need."""
        if start == end:
            return merkle.EMPTY_ROOT
        parts = [self.perfect(pos, h) for pos, h in merkle.perfect_ranges(start, end)]
        acc = parts[-1]
        for node in reversed(parts[:-1]):
            acc = merkle.node_hash(node, acc)
        return acc


def _resolve_size(session: Session, tree_size: int | None, needed: int) -> tuple[int, int]:
    """The tree size to prove against (default: the latest checkpoint that covers
    ``needed`` leaves, else the current size) and the current size."""
    current = ledger_size(session)
    if tree_size is None:
        latest = latest_checkpoint(session)
        tree_size = latest.tree_size if latest and latest.tree_size >= needed else current
    if tree_size < 1:
        # Only when the ledger is still empty (a caller's size is at least 1 at the edge).
        raise NotFound("the ledger is empty: there is no tree to prove against")
    if tree_size > current:
        raise NotFound(f"tree size {tree_size} is beyond the ledger's size {current}")
    return tree_size, current


def _root_at(session: Session, tree: DbTree, size: int) -> tuple[bytes, dict[str, Any] | None]:
    root = tree.subtree(0, size)
    cp = checkpoint_at(session, size)
    if cp is not None and cp.root != root:
        raise LedgerCorrupt(f"stored tree does not match the signed checkpoint at size {size}")
    return root, None if cp is None else cp.to_dict()


def inclusion_proof(
    session: Session, leaf_index: int, tree_size: int | None = None
) -> dict[str, Any]:
    """Proof that entry ``leaf_index`` (its seq) is in the tree of ``tree_size`` leaves.

    Without a size, the latest checkpoint is used if it covers the entry, otherwise the
    current (not yet signed) size; ``checkpoint`` is the signed one when the size has one.
    """
    if leaf_index < 0:
        raise InvalidInput("leaf index must not be negative")
    if leaf_index >= ledger_size(session):
        raise NotFound(f"no ledger entry {leaf_index}")
    size, _current = _resolve_size(session, tree_size, leaf_index + 1)
    if leaf_index >= size:
        raise InvalidInput(f"entry {leaf_index} is not in the tree of size {size}")
    tree = DbTree(session)
    leaf = tree.leaf_hashes(leaf_index, leaf_index + 1)[0]
    path = merkle.inclusion_path(leaf_index, size, tree.subtree)
    root, checkpoint = _root_at(session, tree, size)
    return {
        "leaf_index": leaf_index,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "proof": [p.hex() for p in path],
        "root_hash": root.hex(),
        "checkpoint": checkpoint,
    }


def consistency_proof(session: Session, first: int, second: int | None = None) -> dict[str, Any]:
    """Proof that the tree of ``first`` leaves is a prefix of the tree of ``second``.

    Without ``second``, the latest checkpoint's size is used if it is at least ``first``,
    otherwise the current size.
    """
    if first < 1:
        raise InvalidInput("first tree size must be at least 1")
    size2, current = _resolve_size(session, second, first)
    if first > current:
        raise NotFound(f"tree size {first} is beyond the ledger's size {current}")
    if first > size2:
        raise InvalidInput(f"first size {first} is larger than second size {size2}")
    tree = DbTree(session)
    path = merkle.consistency_path(first, size2, tree.subtree)
    root1, cp1 = _root_at(session, tree, first)
    root2, cp2 = _root_at(session, tree, size2)
    return {
        "first": first,
        "second": size2,
        "first_root": root1.hex(),
        "second_root": root2.hex(),
        "proof": [p.hex() for p in path],
        "first_checkpoint": cp1,
        "second_checkpoint": cp2,
    }


def decode_proof(hashes: list[str]) -> list[bytes]:
    """Hex proof hashes back to bytes (for clients and tests)."""
    try:
        return [bytes.fromhex(h) for h in hashes]
    except ValueError as exc:
        raise InvalidInput("proof hashes must be hex") from exc


__all__ = ["DbTree", "consistency_proof", "decode_proof", "inclusion_proof"]
