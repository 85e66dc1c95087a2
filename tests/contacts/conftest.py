"""Fixtures for the contacts tests: keys, policies and a ledger signer per test."""

from __future__ import annotations

import pytest

from mailveil.config import Settings
from mailveil.ledger.signing import CheckpointSigner
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault, init_keys


@pytest.fixture
def vault(settings: Settings) -> Vault:
    init_keys(settings)
    return Vault.open(settings)


@pytest.fixture
def policy(settings: Settings) -> PolicyEngine:
    return PolicyEngine.load(settings)


@pytest.fixture
def signer(settings: Settings) -> CheckpointSigner:
    return CheckpointSigner.generate(settings.origin)
