"""Where the given test material lives (importable from any test folder: tests/ is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_dir() -> Path:
    """``../shared`` beside the checkout (CI lays it there), or MAILVEIL_SHARED_DIR."""
    env = os.environ.get("MAILVEIL_SHARED_DIR")
    return Path(env) if env else SHARED
