"""Detection test kit: keys on the test's data directory and the long-lived objects."""

from __future__ import annotations

from dataclasses import dataclass

from mailveil.config import Settings
from mailveil.ledger.signing import CheckpointSigner, init_signing_key
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault, init_keys


@dataclass
class Kit:
    settings: Settings
    vault: Vault
    signer: CheckpointSigner
    policy: PolicyEngine


def make_kit(settings: Settings) -> Kit:
    init_keys(settings)
    init_signing_key(settings)
    return Kit(
        settings, Vault.open(settings), CheckpointSigner.load(settings), PolicyEngine.load(settings)
    )
