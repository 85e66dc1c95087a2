"""The witness's add-checkpoint, rule by rule of C2SP tlog-witness, on transparency-dev's
witness test vectors and on logs signed here; and its state under racing submissions, from
threads and from processes sharing its directory."""

from __future__ import annotations

import base64
import multiprocessing
import sys
import threading
from pathlib import Path

import pytest
from witness_testkit import MemoryLog, make_witness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ledger"))
from note_vectors import M_INIT, M_NEXT, MONKEYS_VKEY

from mailveil.ledger import merkle
from mailveil.ledger.notes import (
    ALG_COSIGNATURE_V1,
    EMPTY_ROOT,
    open_note,
    parse_note,
    parse_vkey,
)
from mailveil.ledger.signing import CheckpointSigner
from mailveil.witness.client import submission_body
from mailveil.witness.home import WitnessHome, WitnessSetupError
from mailveil.witness.service import SIZE_MEDIA_TYPE, Witness
from mailveil.witness.state import origin_hash

# transparency-dev/witness witness_test.go: the consistency proof from M_INIT to M_NEXT.
CONS_PROOF = [
    bytes.fromhex(h)
    for h in (
        "b9e1d62618f7fee8034e4c5010f727ab24d8e4705cb296c374bf2025a87a10d2",
        "aac66cd7a79ce4012d80762fe8eec3a77f22d1ca4145c3f4cee022e7efcd599d",
        "89d0f753f66a290c483b39cd5e9eafb12021293395fad3d4a2ad053cfbcfdc9e",
        "29e40bb79c966f4c6fe96aff6f30acfce5f3e8d84c02215175d6e018a5dee833",
    )
]


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    w = make_witness(tmp_path / "w")
    assert w.state.add_log("monkeys", MONKEYS_VKEY)
    return w


def cosigned_by(witness: Witness, note: str, line: str) -> int | None:
    """The timestamp of ``line`` if it is the witness's valid cosignature on ``note``."""
    opened = open_note(note + line, [witness.identity.vkey])
    return opened.verified[0].timestamp


def test_the_vectors_are_cosigned_append_only(witness: Witness) -> None:
    first = witness.add_checkpoint(submission_body(0, [], M_INIT))
    assert first.status == 200
    assert cosigned_by(witness, M_INIT, first.body)
    nxt = witness.add_checkpoint(submission_body(5, CONS_PROOF, M_NEXT))
    assert nxt.status == 200 and cosigned_by(witness, M_NEXT, nxt.body)
    # The monitoring copy: the log's signature it checked and its own cosignature.
    kept = witness.state.latest_by_hash(origin_hash("monkeys"))
    assert kept is not None and kept.size == 8
    opened = open_note(kept.note, [parse_vkey(MONKEYS_VKEY), witness.identity.vkey])
    assert [v.key.name for v in opened.verified] == ["monkeys", "witness.test/w1"]
    # Re-submitting the same tree head refreshes the cosignature.
    again = witness.add_checkpoint(submission_body(8, [], M_NEXT))
    assert again.status == 200 and cosigned_by(witness, M_NEXT, again.body)


def test_a_stale_old_size_gets_409_with_the_witnessed_size(witness: Witness) -> None:
    assert witness.add_checkpoint(submission_body(0, [], M_INIT)).status == 200
    reply = witness.add_checkpoint(submission_body(0, [], M_NEXT))
    assert (reply.status, reply.body, reply.content_type) == (409, "5\n", SIZE_MEDIA_TYPE)
    reply = witness.add_checkpoint(submission_body(3, CONS_PROOF, M_NEXT))
    assert (reply.status, reply.body) == (409, "5\n")


def test_a_bad_consistency_proof_is_refused_and_kept_as_evidence(witness: Witness) -> None:
    assert witness.add_checkpoint(submission_body(0, [], M_INIT)).status == 200
    bad = [*CONS_PROOF[:-1], bytes(32)]
    reply = witness.add_checkpoint(submission_body(5, bad, M_NEXT))
    assert reply.status == 422 and "not consistent with size 5" in reply.body
    refused = witness.state.refusals("monkeys")
    assert [(r.status, r.old_size, r.size, r.witnessed_size) for r in refused] == [(422, 5, 8, 5)]
    assert refused[0].note == M_NEXT  # the log's own signed word, kept
    assert witness.state.latest_by_hash(origin_hash("monkeys")).size == 5  # type: ignore[union-attr]


def test_unknown_origin_404_untrusted_key_403(witness: Witness) -> None:
    other = MemoryLog("other.test/log")
    other.grow(3)
    assert witness.add_checkpoint(other.body(0)).status == 404
    impostor = MemoryLog("monkeys")  # the right origin, another key
    impostor.grow(5)
    reply = witness.add_checkpoint(impostor.body(0))
    assert reply.status == 403 and "not signed by the log's key" in reply.body
    # A signature line claiming the trusted key that does not verify: 403 too.
    forged = M_INIT.replace("202fftzG", "202fftzH")
    assert witness.add_checkpoint(submission_body(0, [], forged)).status == 403
    assert witness.state.logs()[0].latest is None  # nothing was stored


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"old 5\nmonkeys\n5\n", "blank line"),
        (b"old 5\n" + M_INIT.encode(), "not base64"),  # the checkpoint read as proof lines
        (b"new 0\n\n" + M_INIT.encode(), "old <size>"),
        (b"old 05\n\n" + M_INIT.encode(), "leading zeros"),
        (b"old 1\n!!!!\n\n" + M_INIT.encode(), "not base64"),
        (b"old 1\nAAAA\n\n" + M_INIT.encode(), "32-byte"),
        (b"old 1\n" + b"".join([base64.b64encode(bytes(32)) + b"\n"] * 64) + b"\n", "63"),
        (b"old 9\n\n" + M_INIT.encode(), "larger than the checkpoint"),
        (b"old 0\n\n" + b"monkeys\n5\n", "malformed"),
        (b"\xff\xfe", "not UTF-8"),
        (b"old 0\n\n" + b"x" * 17000, "larger than"),
    ],
)
def test_malformed_submissions_get_400(witness: Witness, body: bytes, why: str) -> None:
    reply = witness.add_checkpoint(body)
    assert reply.status == 400 and why in reply.body


def test_proof_rules_that_get_422(tmp_path: Path) -> None:
    log = MemoryLog()
    witness = make_witness(tmp_path / "w")
    witness.state.add_log(log.origin, log.vkey)
    log.grow(4)
    # A proof from size 0 is meaningless.
    assert witness.add_checkpoint(submission_body(0, [bytes(32)], log.note())).status == 422
    # An empty tree must have the empty root.
    signer: CheckpointSigner = log.signer
    empty_wrong = signer.sign_checkpoint(log.origin, 0, bytes(32), 1)
    assert witness.add_checkpoint(submission_body(0, [], empty_wrong)).status == 422
    empty = signer.sign_checkpoint(log.origin, 0, EMPTY_ROOT, 1)
    assert witness.add_checkpoint(submission_body(0, [], empty)).status == 200
    assert witness.add_checkpoint(log.body(0)).status == 200  # grows from the empty tree
    # The same size with another root: a fork, even when the log signs it.
    fork = log.fork(keep=2, grow=2)
    reply = witness.add_checkpoint(fork.body(4))
    assert reply.status == 422 and "different root for size 4" in reply.body


def test_racing_submissions_from_threads_never_roll_back(tmp_path: Path) -> None:
    log = MemoryLog()
    witness = make_witness(tmp_path / "w")
    witness.state.add_log(log.origin, log.vkey)
    log.grow(64)
    assert witness.add_checkpoint(log.body(0, 8)).status == 200
    sizes = list(range(9, 65))
    replies: dict[int, int] = {}
    barrier = threading.Barrier(len(sizes))

    def submit(size: int) -> None:
        body = log.body(8, size)
        barrier.wait()
        replies[size] = witness.add_checkpoint(body).status

    threads = [threading.Thread(target=submit, args=(s,)) for s in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [s for s, status in replies.items() if status == 200]
    assert len(winners) == 1
    assert sorted(status for s, status in replies.items() if s not in winners) == [409] * (
        len(sizes) - 1
    )
    assert witness.state.logs()[0].latest.size == winners[0]  # type: ignore[union-attr]


def _race_in_process(directory: str, notes: list[tuple[int, bytes]], start: object) -> list[int]:
    """In a separate process: submit bodies on a shared witness directory (spawned)."""
    home = WitnessHome(Path(directory))
    witness = Witness(home.load(), home.state())
    start.wait()  # type: ignore[attr-defined]
    return [witness.add_checkpoint(body).status for _size, body in notes]


def test_two_witness_processes_on_one_directory_never_roll_back(tmp_path: Path) -> None:
    """Two logs and two processes: each process submits, from the same witnessed size, every
    checkpoint of both logs; under SQLite's write lock exactly one per log wins."""
    witness = make_witness(tmp_path / "w")
    logs = [MemoryLog("a.test/log"), MemoryLog("b.test/log")]
    for log in logs:
        witness.state.add_log(log.origin, log.vkey)
        log.grow(40)
        assert witness.add_checkpoint(log.body(0, 10)).status == 200
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Manager().Event()
    work = [[(s, log.body(10, s)) for log in logs for s in range(11 + p, 41, 2)] for p in (0, 1)]
    with ctx.Pool(2) as pool:
        pending = [
            pool.apply_async(_race_in_process, (str(tmp_path / "w"), w, start)) for w in work
        ]
        start.set()
        statuses = [status for p in pending for status in p.get(timeout=120)]
    assert statuses.count(200) == 2  # one per log
    assert statuses.count(409) == len(statuses) - 2
    for log in logs:
        latest = witness.state.latest_by_hash(origin_hash(log.origin))
        assert latest is not None and latest.size > 10
        assert merkle.root(log.leaves[: latest.size]) == latest.root


def test_the_witness_keeps_its_name_and_key(tmp_path: Path) -> None:
    home = WitnessHome(tmp_path / "w")
    first = home.init("witness.test/w1")
    assert home.init("witness.test/w1").vkey == first.vkey  # idempotent
    assert first.vkey.alg == ALG_COSIGNATURE_V1
    assert oct((tmp_path / "w" / "witness-ed25519.key").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(WitnessSetupError, match="already the witness"):
        home.init("witness.test/other")
    with pytest.raises(WitnessSetupError, match="must be non-empty"):
        WitnessHome(tmp_path / "x").init("has space")
    with pytest.raises(WitnessSetupError, match="holds no witness"):
        WitnessHome(tmp_path / "none").load()
    assert parse_note(M_INIT).signatures[0].name == "monkeys"
