"""Fixtures for the policy tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailveil.config import Settings
from mailveil.vault import Vault, init_keys


@pytest.fixture
def vault(settings: Settings) -> Vault:
    init_keys(settings)
    return Vault.open(settings)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    return folder
