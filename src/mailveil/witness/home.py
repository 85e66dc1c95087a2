"""A witness's data directory: its Ed25519 cosigning key (0600), its name and its state.

The directory belongs to the witness alone, never to the ledger it watches: a witness run by
the ledger's operator with the ledger's data directory would prove nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mailveil.keyfiles import KeyFileError, read_secret, write_secret
from mailveil.ledger.notes import ALG_COSIGNATURE_V1, VerifierKey, valid_key_name, verifier_key
from mailveil.witness.state import WitnessState

KEY_FILE = "witness-ed25519.key"
VKEY_FILE = "witness.vkey"  # public: the cosignature/v1 verifier key, for the operator to hand out
STATE_FILE = "witness.db"


class WitnessSetupError(RuntimeError):
    """The witness directory is missing, incomplete or does not match what was asked."""


@dataclass(frozen=True)
class WitnessIdentity:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def vkey(self) -> VerifierKey:
        return verifier_key(self.name, self.private_key.public_key(), ALG_COSIGNATURE_V1)


@dataclass(frozen=True)
class WitnessHome:
    path: Path

    @property
    def key_path(self) -> Path:
        return self.path / KEY_FILE

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def init(self, name: str) -> WitnessIdentity:
        """Create the key and state (idempotent for the same name; a different name for an
        existing witness is refused: its name is part of every cosignature it made)."""
        if not valid_key_name(name):
            raise WitnessSetupError(
                f"witness name {name!r} must be non-empty, without spaces or '+' "
                "(a schema-less URL such as witness.example.org/w1 is recommended)"
            )
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = WitnessState(self.state_path)
        existing = state.name()
        if existing is not None and existing != name:
            raise WitnessSetupError(
                f"{self.path} is already the witness {existing!r}; use another directory "
                "for another witness"
            )
        if not self.key_path.exists():
            # Another process may create it first; then use theirs.
            with contextlib.suppress(KeyFileError, FileExistsError):
                write_secret(self.key_path, Ed25519PrivateKey.generate().private_bytes_raw())
        state.set_name(name)
        identity = self.load()
        (self.path / VKEY_FILE).write_text(identity.vkey.vkey + "\n", encoding="utf-8")
        return identity

    def load(self) -> WitnessIdentity:
        if not self.state_path.exists():
            raise WitnessSetupError(
                f"{self.path} holds no witness: run `mailveil witness init --dir {self.path} "
                "--name NAME` first"
            )
        name = WitnessState(self.state_path).name()
        if name is None:
            raise WitnessSetupError(f"{self.path}: the witness has no name; run `witness init`")
        seed = read_secret(self.key_path)
        if len(seed) != 32:
            raise KeyFileError(f"{self.key_path} is not a 32-byte Ed25519 seed")
        return WitnessIdentity(name, Ed25519PrivateKey.from_private_bytes(seed))

    def state(self) -> WitnessState:
        return WitnessState(self.state_path)


__all__ = ["WitnessHome", "WitnessIdentity", "WitnessSetupError"]
