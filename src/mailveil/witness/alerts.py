"""Alerts raised when a witness disagrees with the ledger.

An alert is written as a ``witness_alert`` entry of the ledger itself (durable, in order with
everything else, and covered by the next checkpoint), then handed to ``dispatch``.

``dispatch`` is the one hook point for outbound alerting: it runs after the alert's
transaction committed, once per alert, outside any database transaction. It writes a
structured warning log line and runs ``deliver`` (the publisher passes ``ops.alerts.pump``:
the signed webhook, at once; the outbox retries it later if the receiver is down).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry, from_time_us
from mailveil.witness.logs import logger

ALERT_KIND = "witness_alert"

# Why a witness disagreed, in the words an operator acts on.
REASONS = {
    "inconsistent": "the witness refused the checkpoint: the ledger is not an append-only "
    "extension of what the witness cosigned before (rewritten or forked history)",
    "witness_ahead": "the witness has cosigned a larger tree of this ledger than the ledger now "
    "holds (entries removed, a database restored from an old backup, or a second ledger)",
    "untrusted_key": "the witness does not trust the ledger's signing key (a rotated key not "
    "yet added to the witness, or a checkpoint signed by another key)",
    "unknown_log": "the witness does not follow this ledger's origin",
    "bad_cosignature": "the witness answered with no valid cosignature by its configured key",
}


@dataclass(frozen=True)
class WitnessAlert:
    witness: str
    reason: str  # a key of REASONS
    ledger_size: int  # the checkpoint's size that was submitted
    witness_size: int | None  # what the witness said it cosigned, when it said
    detail: str  # the witness's own words, or what the ledger found

    @property
    def summary(self) -> str:
        return f"witness {self.witness}: {REASONS.get(self.reason, self.reason)}"

    @property
    def dedupe_key(self) -> str:
        """Same witness, same reason, same witness state: the same alert (not raised twice
        while a witness keeps refusing the same thing every minute)."""
        return f"{self.reason}:{self.witness_size}"[:200]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


def record_alert(session: Session, ledger: Ledger, alert: WitnessAlert) -> int:
    """Append the alert to the ledger in the caller's transaction; its sequence number."""
    event = Event(
        kind=ALERT_KIND,
        actor="system",
        ref=f"witness:{alert.witness}",
        purpose=alert.reason,
        detail=alert.to_dict(),
    )
    return ledger.append(session, [event])[0]


def dispatch(
    alert: WitnessAlert, seq: int | None = None, *, deliver: Callable[[], object] | None = None
) -> None:
    """THE hook for outbound alerts (see the module docstring). Called after commit."""
    if deliver is not None:
        try:
            deliver()
        except Exception as exc:  # the outbox keeps it; the next pump retries
            logger().error("witness_alert_delivery_failed", error_type=type(exc).__name__)
    logger().warning(
        "witness_disagreement",
        witness=alert.witness,
        reason=alert.reason,
        ledger_size=alert.ledger_size,
        witness_size=alert.witness_size,
        detail=alert.detail,
        ledger_seq=seq,
    )


def list_alerts(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """Witness alerts, newest first, as recorded in the ledger."""
    rows = session.execute(
        select(LedgerEntry.seq, LedgerEntry.time_us, LedgerEntry.detail)
        .where(LedgerEntry.kind == ALERT_KIND)
        .order_by(LedgerEntry.seq.desc())
        .limit(limit)
    ).all()
    out = []
    for seq, time_us, detail in rows:
        out.append(
            {"seq": int(seq), "time": from_time_us(int(time_us)).isoformat(), **json.loads(detail)}
        )
    return out


__all__ = ["ALERT_KIND", "REASONS", "WitnessAlert", "dispatch", "list_alerts", "record_alert"]
