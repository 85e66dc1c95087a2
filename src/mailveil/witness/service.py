"""The witness's one operation, C2SP tlog-witness ``add-checkpoint``, step by step.

Request body: ``old <size>\\n``, up to 63 base64 consistency-proof hashes (one a line), a blank
line, then the checkpoint (a signed note). The answer, by the spec's status codes:

- 400: the body is malformed, or the old size is larger than the checkpoint's;
- 403: no signature by a key trusted for the origin, or such a signature fails;
- 404: the origin is not a log this witness follows;
- 409 (``text/x.tlog.size``): the old size is not the size the witness last cosigned, which is
  returned so the log can send a proof from there;
- 422: the consistency proof does not verify, a proof was sent from size 0, the root differs
  at an equal size, or an empty tree does not have the empty root;
- 200: the checkpoint is stored, then its cosignature line(s) are returned.

Refused 422s whose checkpoint the log validly signed are kept (``state.refusals``): two
inconsistent checkpoints under one log key prove a fork or a rewrite.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailveil.ledger import merkle
from mailveil.ledger.notes import (
    EMPTY_ROOT,
    Note,
    NoteError,
    cosign,
    open_note,
    parse_checkpoint_text,
    parse_note,
    parse_vkey,
)
from mailveil.witness.home import WitnessIdentity
from mailveil.witness.logs import logger
from mailveil.witness.state import WitnessState

MAX_PROOF_LINES = 63
MAX_BODY_BYTES = 16 * 1024  # what transparency-dev's witness accepts; a checkpoint is < 1 KiB
SIZE_MEDIA_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Submission:
    old_size: int
    proof: list[bytes]
    note_text: str


def _decimal(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (text != "0" and text.startswith("0")):
        raise _Refused(400, f"{what} is not a decimal number without leading zeros")
    value = int(text)
    if value >= 2**64:
        raise _Refused(400, f"{what} is out of range")
    return value


def parse_submission(body: bytes) -> Submission:
    """Split an add-checkpoint body into old size, proof and checkpoint (400 if malformed)."""
    if len(body) > MAX_BODY_BYTES:
        raise _Refused(400, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(400, "the body is not UTF-8") from exc
    head, sep, note_text = text.partition("\n\n")
    if not sep:
        raise _Refused(400, "no blank line between the old size and proof and the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old "):
        raise _Refused(400, "the first line is 'old <size>'")
    old_size = _decimal(lines[0][4:], "the old size")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise _Refused(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in proof_lines:
        try:
            value = base64.b64decode(line, validate=True)
        except binascii.Error as exc:
            raise _Refused(400, "a consistency proof line is not base64") from exc
        if len(value) != merkle.HASH_SIZE:
            raise _Refused(400, "a consistency proof line is not a 32-byte hash")
        proof.append(value)
    return Submission(old_size, proof, note_text)


class Witness:
    """Checks and cosigns checkpoints for the logs its state follows."""

    def __init__(
        self,
        identity: WitnessIdentity,
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.state = state
        self.clock = clock

    def add_checkpoint(self, body: bytes) -> Reply:
        try:
            return self._add(parse_submission(body))
        except _Refused as refused:
            return Reply(refused.status, refused.reason + "\n")

    def _add(self, sub: Submission) -> Reply:
        try:
            note = parse_note(sub.note_text)
            checkpoint = parse_checkpoint_text(note.text)
        except NoteError as exc:
            raise _Refused(400, f"the checkpoint is malformed: {exc}") from exc
        origin = checkpoint.origin
        vkeys = self.state.log_vkeys(origin)
        if not vkeys:
            raise _Refused(404, "this witness does not follow that log (unknown origin)")
        try:
            opened = open_note(note, [parse_vkey(v) for v in vkeys])
        except NoteError as exc:
            raise _Refused(403, f"the checkpoint is not signed by the log's key: {exc}") from exc
        size, root = checkpoint.size, checkpoint.root
        if sub.old_size > size:
            raise _Refused(400, "the old size is larger than the checkpoint's size")
        if size == 0 and root != EMPTY_ROOT:
            raise _Refused(422, "an empty tree's root is the hash of the empty string")
        if sub.old_size == 0 and sub.proof:
            raise _Refused(422, "a consistency proof from size 0 must be empty")
        with self.state.write() as tx:
            latest = tx.latest(origin)
            current = latest.size if latest is not None else 0
            if sub.old_size != current:
                return Reply(409, f"{current}\n", SIZE_MEDIA_TYPE)
            problem = None
            if latest is not None and sub.old_size == size and latest.root != root:
                problem = f"a different root for size {size}, which it cosigned before"
            elif latest is not None and 0 < sub.old_size < size:
                try:
                    merkle.verify_consistency(sub.old_size, size, latest.root, root, sub.proof)
                except merkle.ProofError as exc:
                    problem = f"not consistent with size {sub.old_size} it cosigned: {exc}"
            if problem is not None:
                tx.refuse(
                    origin,
                    422,
                    problem,
                    old_size=sub.old_size,
                    size=size,
                    witnessed_size=current,
                    note=sub.note_text,
                    proof="".join(base64.b64encode(p).decode() + "\n" for p in sub.proof),
                )
                logger().warning(
                    "witness_refused_checkpoint",
                    origin=origin,
                    size=size,
                    witnessed_size=current,
                    reason=problem,
                )
                return Reply(422, f"refused: {problem}\n")
            me = self.identity
            signature = cosign(me.private_key, me.name, note.text, int(self.clock()))
            # What monitors are served: the log signatures checked here, and this cosignature.
            kept = Note(note.text, (*(v.signature for v in opened.verified), signature))
            tx.store(origin, size, root, kept.serialise())
        # Committed (durably) before the cosignature leaves the witness.
        return Reply(200, signature.line)


__all__ = [
    "MAX_BODY_BYTES",
    "SIZE_MEDIA_TYPE",
    "Reply",
    "Submission",
    "Witness",
    "parse_submission",
]
