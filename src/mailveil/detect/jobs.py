"""The detection job: the ledger scan, then (when its dependencies are there) the access
anomaly job, each turned into signals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.detect.scan import scan_ledger
from mailveil.ledger.signing import CheckpointSigner


@dataclass
class DetectionRun:
    entries_scanned: int = 0
    signals: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"entries_scanned": self.entries_scanned, "signals": self.signals}


def run_detection(session: Session, settings: Settings, signer: CheckpointSigner) -> DetectionRun:
    """Scan the ledger from where the last run stopped. Does not commit."""
    scanned = scan_ledger(session, settings, signer)
    return DetectionRun(scanned.entries, dict(scanned.signals))


__all__ = ["DetectionRun", "run_detection"]
