"""The witness area's logger: the configured structlog pipeline when there is one (`serve`),
else stderr, so an unconfigured command never mixes log lines into its output on stdout (a
signed note, a cosignature)."""

from __future__ import annotations

import sys
from typing import Any

import structlog


def logger() -> Any:
    if structlog.is_configured():
        return structlog.get_logger("mailveil.witness")
    return structlog.wrap_logger(structlog.PrintLogger(sys.stderr))


__all__ = ["logger"]
