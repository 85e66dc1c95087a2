"""The privacy officer's actions on a report, checked against the report itself: a
submission goes only to a recipient the report lists and only once the report is final (not
a draft); a decision names a recipient the report lists. The API and the CLI call these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.errors import Conflict, InvalidInput
from mailveil.incidents import filings
from mailveil.incidents.models import ReportDecision, ReportSubmission
from mailveil.incidents.regulator import regulator_report, snapshot
from mailveil.ledger.append import Ledger


def _obligation(report: dict[str, Any], obligation: str) -> str:
    keys = [d["key"] for d in report["deadlines"]]
    if obligation not in keys:
        listed = ", ".join(keys) or "none: nobody is affected"
        raise InvalidInput(
            f"obligation {obligation!r} is not in this report (its recipients: {listed})"
        )
    return obligation


def submit(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    incident_id: int,
    obligation: str,
    kind: str,
    actor: str,
    submitted_at: datetime | None = None,
    reference: str = "",
    note: str = "",
) -> ReportSubmission:
    """Record a submission of the report as it stands now. Does not commit."""
    report = regulator_report(session, settings, incident_id)
    _obligation(report, obligation)
    if report["draft"]:
        raise Conflict(
            "the report is a draft and cannot be filed: " + "; ".join(report["draft_reasons"])
        )
    return filings.record_submission(
        session,
        ledger=ledger,
        incident_id=incident_id,
        obligation=obligation,
        kind=kind,
        snapshot=snapshot(report),
        actor=actor,
        submitted_at=submitted_at,
        reference=reference,
        note=note,
    )


def decide(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    incident_id: int,
    obligation: str,
    notify: bool,
    reason_code: str,
    explanation: str,
    actor: str,
) -> ReportDecision:
    """Record a decision to notify a recipient of the report, or not. Does not commit."""
    _obligation(regulator_report(session, settings, incident_id), obligation)
    return filings.record_decision(
        session,
        ledger=ledger,
        incident_id=incident_id,
        obligation=obligation,
        notify=notify,
        reason_code=reason_code,
        explanation=explanation,
        actor=actor,
    )


__all__ = ["decide", "submit"]
