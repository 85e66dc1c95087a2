"""Inclusion and consistency proofs served from the database verify against signed roots."""

from __future__ import annotations

import random

import pytest
from ledger_testkit import fill, signer_for
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.errors import InvalidInput, NotFound
from mailveil.ledger import merkle, proofs
from mailveil.ledger.append import checkpoint_at, latest_checkpoint
from mailveil.ledger.models import LedgerEntry, LedgerNode
from mailveil.ledger.signing import verify_checkpoint


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_inclusion_proof_verifies_against_the_signed_checkpoint(
    session: Session, settings: Settings
) -> None:
    signer = signer_for(settings)
    fill(session, settings, signer, 40)  # checkpoints at 16 and 32
    for index in (0, 7, 15, 31):
        result = proofs.inclusion_proof(session, index)  # default: latest checkpoint
        assert result["tree_size"] == 32 and result["checkpoint"] is not None
        signed = verify_checkpoint(result["checkpoint"]["note"], signer.verifier_key)
        merkle.verify_inclusion(
            index, 32, _h(result["leaf_hash"]), proofs.decode_proof(result["proof"]), signed.root
        )
    # An entry after the latest checkpoint: proved against the current, unsigned size.
    late = proofs.inclusion_proof(session, 35)
    assert late["tree_size"] == 40 and late["checkpoint"] is None
    merkle.verify_inclusion(
        35, 40, _h(late["leaf_hash"]), proofs.decode_proof(late["proof"]), _h(late["root_hash"])
    )


def test_consistency_between_two_checkpoints(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    fill(session, settings, signer, 50)
    result = proofs.consistency_proof(session, 16, 48)
    first = verify_checkpoint(result["first_checkpoint"]["note"], signer.verifier_key)
    second = verify_checkpoint(result["second_checkpoint"]["note"], signer.verifier_key)
    merkle.verify_consistency(16, 48, first.root, second.root, proofs.decode_proof(result["proof"]))
    assert proofs.consistency_proof(session, 32)["second"] == 48  # default: latest checkpoint
    assert proofs.consistency_proof(session, 49)["second"] == 50


def test_every_proof_of_a_small_tree(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    fill(session, settings, signer, 21)
    leaves = session.scalars(select(LedgerEntry.leaf_hash).order_by(LedgerEntry.seq)).all()
    for size in range(1, 22):
        root = merkle.root(leaves[:size])
        for index in range(size):
            got = proofs.inclusion_proof(session, index, size)
            assert _h(got["root_hash"]) == root
            merkle.verify_inclusion(
                index, size, leaves[index], proofs.decode_proof(got["proof"]), root
            )
        for first in range(1, size + 1):
            got = proofs.consistency_proof(session, first, size)
            merkle.verify_consistency(
                first, size, merkle.root(leaves[:first]), root, proofs.decode_proof(got["proof"])
            )


def test_proofs_over_stored_tiles_and_without_them(session: Session, settings: Settings) -> None:
    wide = settings.with_overrides(checkpoint_every_entries=500)
    signer = signer_for(wide)
    fill(session, wide, signer, 1100)  # four complete 256-leaf tiles
    leaves = session.scalars(select(LedgerEntry.leaf_hash).order_by(LedgerEntry.seq)).all()
    rng = random.Random(5)
    cases = [(rng.randrange(size), size) for size in rng.sample(range(1, 1101), 12)]
    for index, size in [*cases, (0, 1100), (1099, 1100), (513, 1024)]:
        got = proofs.inclusion_proof(session, index, size)
        merkle.verify_inclusion(
            index,
            size,
            leaves[index],
            proofs.decode_proof(got["proof"]),
            merkle.root(leaves[:size]),
        )
    before = proofs.consistency_proof(session, 300, 1000)
    session.execute(delete(LedgerNode))  # tiles missing: proofs fall back to leaf hashes
    assert proofs.consistency_proof(session, 300, 1000) == before


def test_out_of_range_requests_get_clear_errors(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    with pytest.raises(NotFound):
        proofs.inclusion_proof(session, 0)
    fill(session, settings, signer, 20)
    with pytest.raises(NotFound):
        proofs.inclusion_proof(session, 20)
    with pytest.raises(NotFound):
        proofs.inclusion_proof(session, 3, 21)
    with pytest.raises(InvalidInput):
        proofs.inclusion_proof(session, 10, 5)
    with pytest.raises(InvalidInput):
        proofs.inclusion_proof(session, -1)
    with pytest.raises(NotFound):  # a tree of size 0 holds nothing to prove
        proofs.inclusion_proof(session, 0, 0)
    with pytest.raises(InvalidInput):
        proofs.consistency_proof(session, 0, 5)
    with pytest.raises(InvalidInput):
        proofs.consistency_proof(session, 10, 5)
    with pytest.raises(NotFound):
        proofs.consistency_proof(session, 5, 21)
    with pytest.raises(NotFound):
        proofs.consistency_proof(session, 25)
    assert latest_checkpoint(session) is not None and checkpoint_at(session, 17) is None
