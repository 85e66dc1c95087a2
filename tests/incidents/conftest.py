"""Incident-response fixtures."""

from __future__ import annotations

import pytest

from mailveil.config import Settings
from mailveil.ledger.signing import CheckpointSigner, init_signing_key
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault, init_keys


@pytest.fixture
def parts(settings: Settings) -> tuple[Settings, Vault, CheckpointSigner, PolicyEngine]:
    init_keys(settings)
    init_signing_key(settings)
    return (
        settings,
        Vault.open(settings),
        CheckpointSigner.load(settings),
        PolicyEngine.load(settings),
    )
