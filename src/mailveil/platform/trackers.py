"""Trackers removed from each seller's mail to customers (``relay.trackers``), counted from
the ledger: a ``message`` entry whose message had trackers carries their counts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.db.base import utcnow
from mailveil.ledger.models import LedgerEntry

KIND_MESSAGE = "message"


def tracker_counts(
    session: Session, seller_id: int, *, days: int = 30, now: datetime | None = None
) -> dict[str, Any]:
    since = (now or utcnow()) - timedelta(days=days)
    since_us = int(since.timestamp() * 1_000_000)
    totals = {"messages": 0, "with_trackers": 0, "pixels": 0, "links": 0, "opaque": 0,
              "params": 0}  # fmt: skip
    rows = session.scalars(
        select(LedgerEntry.detail).where(
            LedgerEntry.actor == f"principal:{seller_id}",
            LedgerEntry.kind == KIND_MESSAGE,
            LedgerEntry.time_us >= since_us,
        )
    )
    for text in rows:
        totals["messages"] += 1
        try:
            found = json.loads(text).get("trackers")
        except (ValueError, AttributeError):
            continue
        if isinstance(found, dict):
            totals["with_trackers"] += 1
            for key in ("pixels", "links", "opaque", "params"):
                value = found.get(key)
                totals[key] += value if isinstance(value, int) else 0
    return {"seller_id": seller_id, "days": days, **totals}


__all__ = ["tracker_counts"]
