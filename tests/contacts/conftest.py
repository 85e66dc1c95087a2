"""Fixtures for the contacts tests: keys, policies and a ledger ledger per test."""

from __future__ import annotations

import pytest

from mailveil.config import Settings
from mailveil.ledger.append import Ledger
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
def ledger(settings: Settings) -> Ledger:
    return Ledger(settings, CheckpointSigner.generate(settings.origin))
