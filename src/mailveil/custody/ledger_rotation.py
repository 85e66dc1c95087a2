"""Rotating the ledger's checkpoint signing key; the change is itself a ledger entry.

1. A ``ledger_key_rotated`` entry names the old and the new verifier keys, appended and
   signed by the old key, and the checkpoint that first covers it carries both signatures:
   the old key vouches for its successor inside the tree it signed.
2. The new seed replaces ``ledger-ed25519.key``; the old verifier key is kept (public half
   only) as ``ledger-ed25519-retired-<time>.pub``, so every checkpoint it signed keeps
   verifying: ``ledger_keys`` is the current key and the retired ones, and ``ledger verify``
   accepts a checkpoint signed by any of them.

Processes that loaded the old key (API, relay, workers) keep signing with it until they are
restarted; their checkpoints still verify (the old key is in the history). Witnesses pin the
log's verifier key: give them the new one (`mailveil ledger key`) after a rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.custody.binding import LEDGER, _ed25519_fp
from mailveil.custody.models import KeyFingerprint
from mailveil.keyfiles import write_secret
from mailveil.ledger.append import Checkpoint, Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import (
    KEY_FILE,
    CheckpointSigner,
    key_path,
    parse_verifier_key,
    pub_path,
)

RETIRED_PUB_PREFIX = "ledger-ed25519-retired-"
EVENT_KIND = "ledger_key_rotated"


@dataclass(frozen=True)
class TransitionSigner(CheckpointSigner):
    """Signs with the new key and adds the old key's signature to the same note."""

    cosigner: CheckpointSigner | None = None

    def sign_note(self, body: str) -> str:
        note = super().sign_note(body)
        if self.cosigner is None:
            return note
        second = self.cosigner.sign_note(body).rpartition("\n\n")[2]
        return note + second


@dataclass
class LedgerRotation:
    old_key: str  # verifier key strings
    new_key: str
    seq: int  # the ledger_key_rotated entry
    checkpoint: Checkpoint | None
    retired_file: str


def ledger_keys(settings: Settings, current: Ed25519PublicKey) -> tuple[Ed25519PublicKey, ...]:
    """The current key and every retired one (their verifier keys in the keys directory)."""
    keys = [current]
    for path in sorted(settings.keys_dir.glob(f"{RETIRED_PUB_PREFIX}*.pub")):
        keys.append(parse_verifier_key(path.read_text(encoding="utf-8"))[1])
    return tuple(keys)


def rotate_ledger_key(
    session: Session, settings: Settings, old: CheckpointSigner, *, actor: str
) -> LedgerRotation:
    """Record the rotation in the ledger (signed by both keys), then install the new key.
    Commits."""
    new = CheckpointSigner(settings.origin, Ed25519PrivateKey.generate())
    event = Event(
        EVENT_KIND,
        actor=actor,
        detail={"old_key": old.verifier_key, "new_key": new.verifier_key},
    )
    # No automatic checkpoint inside this append: the one covering the entry must be the
    # transition checkpoint below, signed by both keys.
    quiet = settings.with_overrides(checkpoint_every_entries=2**62, checkpoint_every_seconds=1e18)
    (seq,) = Ledger(quiet, old).append(session, [event])
    both = TransitionSigner(new.key_name, new.private_key, cosigner=old)
    cp = Ledger(settings, both).checkpoint_now(session)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    retired = f"{RETIRED_PUB_PREFIX}{stamp}.pub"
    (settings.keys_dir / retired).write_text(old.verifier_key + "\n", encoding="utf-8")
    seed = new.private_key.private_bytes_raw()
    row = session.get(KeyFingerprint, (LEDGER, KEY_FILE))
    if row is not None:
        row.fingerprint = _ed25519_fp(seed)
    session.commit()
    write_secret(key_path(settings), seed, overwrite=True)
    tmp = pub_path(settings).with_name(f".{pub_path(settings).name}.tmp")
    tmp.write_text(new.verifier_key + "\n", encoding="utf-8")
    tmp.replace(pub_path(settings))
    return LedgerRotation(old.verifier_key, new.verifier_key, seq, cp, retired)


__all__ = ["EVENT_KIND", "LedgerRotation", "TransitionSigner", "ledger_keys", "rotate_ledger_key"]
