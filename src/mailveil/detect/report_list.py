"""Listing abuse reports with their outcome and the reason for it (``GET /v1/reports``,
``mailveil reports list``): what investigators read to see why a report did or did not
count. Nothing here shows a real address: senders that are customers are ``customer:<id>``,
and the kept facts were scrubbed when the report was stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.db.lookup import get_or_not_found
from mailveil.detect.models import AbuseReport
from mailveil.detect.reports import OUTCOMES

CHANNELS = ("api", "mailbox")


def list_reports(
    session: Session,
    *,
    outcome: str | None = None,
    verified: bool | None = None,
    channel: str | None = None,
    reporter_customer_id: int | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
    newest_first: bool = False,
) -> list[AbuseReport]:
    """Reports, oldest first (or newest first), filtered; paged by id (``after_id``: the
    last one seen)."""
    stmt = select(AbuseReport)
    if outcome is not None:
        stmt = stmt.where(AbuseReport.outcome == v.choice(outcome, OUTCOMES, "outcome"))
    if verified is not None:
        stmt = stmt.where(AbuseReport.verified.is_(verified))
    if channel is not None:
        stmt = stmt.where(AbuseReport.channel == v.choice(channel, CHANNELS, "channel"))
    if reporter_customer_id is not None:
        stmt = stmt.where(AbuseReport.reporter_customer_id == reporter_customer_id)
    if since is not None:
        stmt = stmt.where(AbuseReport.received_at >= since)
    if after_id is not None:
        stmt = stmt.where(AbuseReport.id < after_id if newest_first else AbuseReport.id > after_id)
    order = AbuseReport.id.desc() if newest_first else AbuseReport.id
    return list(session.scalars(stmt.order_by(order).limit(v.page_limit(limit))))


def get_report(session: Session, report_id: int) -> AbuseReport:
    return get_or_not_found(session, AbuseReport, report_id, "report")


def report_view(row: AbuseReport) -> dict[str, Any]:
    facts = row.facts or {}
    return {
        "id": row.id,
        "reference": f"R-{row.id}",
        "received_at": row.received_at.isoformat(),
        "channel": row.channel,
        "reporter_customer_id": row.reporter_customer_id,
        "verified": row.verified,
        "verification": row.verification,
        "outcome": row.outcome,
        "reason": row.reason,
        "shape": row.shape,
        "sender": row.sender,
        "sender_domain": row.sender_domain,
        "alias": row.alias,
        "signal_id": row.signal_id,
        "checks": row.checks,
        "checked_at": row.checked_at.isoformat() if row.checked_at else None,
        "complaint_about": facts.get("complaint_about"),
        "corroborates_entry": facts.get("corroborates_entry"),
        "relay_record": facts.get("relay_record"),
        "size": row.raw_bytes,
        "sha256": bytes(row.raw_sha256).hex(),
    }


__all__ = ["CHANNELS", "get_report", "list_reports", "report_view"]
