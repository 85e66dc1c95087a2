"""Detection fixtures."""

from __future__ import annotations

import pytest
from detect_testkit import Kit, make_kit

from mailveil.config import Settings


@pytest.fixture
def kit(settings: Settings) -> Kit:
    return make_kit(settings)
