"""Incident-response fixtures."""

from __future__ import annotations

import pytest

from mailveil.config import Settings
from mailveil.ledger.append import Ledger
from mailveil.ledger.signing import init_signing_key
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault, init_keys


@pytest.fixture
def parts(settings: Settings) -> tuple[Settings, Vault, Ledger, PolicyEngine]:
    init_keys(settings)
    init_signing_key(settings)
    return (
        settings,
        Vault.open(settings),
        Ledger.load(settings),
        PolicyEngine.load(settings),
    )
