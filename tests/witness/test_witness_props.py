"""The witness against an adversary holding the log's signing key: generated forks and
rewrites of an honest log's history (any fork point, any length, the fork's own true proof,
the honest log's proof, random or truncated proofs) are never cosigned, and the witness's
record never leaves the honest history; honest growth is always cosigned."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from witness_testkit import MemoryLog, make_witness

from mailveil.ledger import merkle
from mailveil.witness.client import submission_body
from mailveil.witness.service import Witness
from mailveil.witness.state import origin_hash

PROOFS = ("fork", "honest", "random", "truncated", "empty")
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory) -> Witness:
    """One witness for every example; each example is a new log (its own origin and key)."""
    return make_witness(tmp_path_factory.mktemp("w"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    witnessed=st.integers(1, 40),
    fork_at=st.integers(0, 39),
    fork_len=st.integers(1, 40),
    proof_kind=st.sampled_from(PROOFS),
    honest_growth=st.integers(0, 20),
    seed=st.binary(min_size=32, max_size=32),
)
def test_forks_are_never_cosigned(
    witness: Witness,
    witnessed: int,
    fork_at: int,
    fork_len: int,
    proof_kind: str,
    honest_growth: int,
    seed: bytes,
) -> None:
    honest = MemoryLog(f"log.test/{uuid.uuid4().hex}")
    honest.grow(witnessed)
    witness.state.add_log(honest.origin, honest.vkey)
    assert witness.add_checkpoint(honest.body(0)).status == 200
    fork_at = min(fork_at, witnessed - 1)  # the fork differs at or before what was witnessed
    fork = honest.fork(keep=fork_at, grow=fork_len, tag=f"forged {seed.hex()}")
    size = len(fork.leaves)
    if size > witnessed:
        proof = {
            "fork": fork.proof(witnessed),
            "honest": merkle.consistency_path(
                witnessed, size, merkle.memory_subtree(honest.leaves + fork.leaves[witnessed:])
            ),
            "random": [merkle.leaf_hash(seed + bytes([i])) for i in range(6)],
            "truncated": fork.proof(witnessed)[:-1],
            "empty": [],
        }[proof_kind]
        old = witnessed
    else:
        proof, old = [], witnessed  # not larger: the witness must refuse it whatever it is
    reply = witness.add_checkpoint(submission_body(old, proof, fork.note()))
    COUNTS[str(reply.status)] = COUNTS.get(str(reply.status), 0) + 1
    assert reply.status != 200, (witnessed, fork_at, fork_len, proof_kind)
    kept = witness.state.latest_by_hash(origin_hash(honest.origin))
    assert kept is not None and kept.size == witnessed
    assert kept.root == merkle.root(honest.leaves)
    # The honest log, which never forked, still grows.
    honest.grow(honest_growth)
    assert witness.add_checkpoint(honest.body(witnessed)).status == 200


def test_zz_report_counts() -> None:
    """How the generated forks were refused (printed with -s; the refusals are asserted)."""
    print(f"generated forks refused by status: {dict(sorted(COUNTS.items()))}")
