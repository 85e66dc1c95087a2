"""Check one entry the way an outsider would: its leaf hashed again, an inclusion proof to
the latest signed checkpoint, and that checkpoint's signature, step by step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from mailveil.errors import InvalidInput, LedgerCorrupt
from mailveil.ledger import merkle
from mailveil.ledger.append import Ledger
from mailveil.ledger.proofs import decode_proof, inclusion_proof
from mailveil.ledger.queries import entry_dict, get_entry
from mailveil.ledger.signing import CheckpointError, verify_checkpoint


@dataclass
class EntryCheck:
    seq: int
    entry: dict[str, Any]
    tree_size: int
    root_hex: str
    proof: list[str]
    steps: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, detail)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(ok for _what, ok, _detail in self.steps)


def check_entry(session: Session, ledger: Ledger, seq: int) -> EntryCheck:
    """Signs a checkpoint first when entries were added since the last (the caller commits)."""
    if seq < 0:
        raise InvalidInput("an entry is named by its sequence number (0 or more)")
    checkpoint = ledger.checkpoint_now(session)
    if checkpoint is None:
        raise InvalidInput("the ledger is empty")
    entry = get_entry(session, seq)
    proof: list[str] = []
    broken: str | None = None
    try:
        proof = inclusion_proof(session, seq, checkpoint.tree_size)["proof"]
    except LedgerCorrupt as exc:  # the stored tree no longer gives the signed root
        broken = exc.detail
    out = EntryCheck(seq, entry_dict(entry), checkpoint.tree_size, checkpoint.root.hex(), proof)
    try:
        parsed = verify_checkpoint(checkpoint.note, ledger.signer.verifier_key)
        out.steps.append(
            ("checkpoint signature", True, f"Ed25519 signature by {parsed.key_name} verifies")
        )
    except CheckpointError as exc:
        out.steps.append(("checkpoint signature", False, str(exc)))
        return out
    leaf = merkle.leaf_hash(entry.leaf.encode("utf-8"))
    same = leaf == bytes(entry.leaf_hash)
    out.steps.append(
        (
            "leaf hash",
            same,
            f"SHA-256(0x00 || entry) = {leaf.hex()}" + ("" if same else " (stored hash differs)"),
        )
    )
    if broken is not None:
        out.steps.append(("inclusion proof", False, broken))
        return out
    path = decode_proof(proof)
    try:
        root = merkle.root_from_inclusion(seq, parsed.tree_size, leaf, path)
    except merkle.ProofError as exc:
        out.steps.append(("inclusion proof", False, str(exc)))
        return out
    same = root == parsed.root
    told = " = the signed root" if same else f", not the signed {parsed.root.hex()}"
    out.steps.append(
        ("inclusion proof", same, f"{len(path)} hashes lead to root {root.hex()}{told}")
    )
    return out


__all__ = ["EntryCheck", "check_entry"]
