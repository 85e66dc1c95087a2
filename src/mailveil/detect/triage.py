"""A person's triage of signals (confirm, dismiss with a reason, merge into an incident),
each a ledger entry under that person; and abuse reports with their outcome and why."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.db.base import utcnow
from mailveil.detect.incidents import get_incident
from mailveil.detect.intake_model import DETAILS, Reason
from mailveil.detect.models import AbuseReport, Incident, IncidentCulprit, Signal
from mailveil.detect.report_list import report_view
from mailveil.detect.signals import LIVE_STATUSES, incident_for
from mailveil.errors import Conflict, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event

OUTCOME_WORDS = {
    "attributed": "the spam reached an alias, and the alias names whom it was disclosed to",
    "real_address": (
        "the spam reached the customer's own address; kept for ranking who saw the reporters"
    ),
    "complaint": "mail the relay itself delivered from a principal: a complaint, not a leak",
    "unconfirmed": (
        "the alias names whom it was disclosed to, but the mail is not proven to be theirs"
    ),
    "unverified": "the reporter could not be proven to be the customer; it accuses no one",
    "unattributed": "the original message was found, but it names no alias or known sender",
    "no_original": "no original message was found in the report",
    "rejected": "the report could not be read",
    "pending": "not processed yet",
}
VERIFICATION_WORDS = {
    "api-session": "uploaded by the marketplace for its signed-in customer",
    "dmarc-aligned": "mailed from the customer's own address, SPF/DKIM aligned (DMARC pass)",
    "from-customer-unauthenticated": "claims the customer's address, not authenticated",
    "unverified": "not from a known customer",
}


def get_signal(session: Session, signal_id: int) -> Signal:
    row = session.get(Signal, signal_id)
    if row is None:
        raise NotFound(f"no signal {signal_id}")
    return row


def triage_queue(session: Session, *, limit: int = 200) -> list[Signal]:
    """Signals nobody has triaged yet, oldest first."""
    return list(
        session.scalars(
            select(Signal)
            .where(Signal.triage == "new")
            .order_by(Signal.id)
            .limit(v.page_limit(limit))
        )
    )


def _record(
    session: Session,
    ledger: Ledger,
    signal: Signal,
    actor: str,
    action: str,
    **detail: Any,
) -> None:
    ledger.append(
        session,
        [
            Event(
                "signal_triaged",
                actor,
                f"incident:{signal.incident_id}" if signal.incident_id is not None else None,
                signal.alias,
                detail={"signal": signal.id, "action": action, "incident": signal.incident_id,
                        **detail},
            )
        ],
    )  # fmt: skip


def _settle(signal: Signal, state: str, reason: str | None, actor: str) -> None:
    signal.triage = state
    signal.triage_reason = reason
    signal.triaged_by = actor
    signal.triaged_at = utcnow()


def confirm_signal(session: Session, ledger: Ledger, signal_id: int, *, actor: str) -> Signal:
    """A person confirms the signal is real. One that no incident holds yet (no source
    principal was named) opens an incident of its own."""
    signal = get_signal(session, signal_id)
    if signal.triage != "new":
        raise Conflict(f"signal {signal_id} is already {signal.triage}")
    if signal.incident_id is None:
        incident, _new = incident_for(
            session, ledger, signal.source_principal_id, signal.kind, utcnow()
        )
        _attach(session, signal, incident)
    _settle(signal, "confirmed", None, actor)
    session.flush()
    _record(session, ledger, signal, actor, "confirmed")
    return signal


def dismiss_signal(
    session: Session,
    ledger: Ledger,
    signal_id: int,
    *,
    reason: str,
    actor: str,
) -> Signal:
    """A person dismisses the signal, saying why; it stays in its incident, marked."""
    reason = v.text(reason, "reason", 500, allow_empty=False)
    signal = get_signal(session, signal_id)
    if signal.triage == "dismissed":
        raise Conflict(f"signal {signal_id} is already dismissed")
    _settle(signal, "dismissed", reason, actor)
    session.flush()
    _record(session, ledger, signal, actor, "dismissed", reason=reason)
    return signal


def _attach(session: Session, signal: Signal, incident: Incident) -> None:
    if signal.incident_id is not None:
        old = session.get(Incident, signal.incident_id)
        if old is not None:
            old.signal_count = max(0, old.signal_count - 1)
    signal.incident_id = incident.id
    incident.signal_count += 1
    incident.updated_at = utcnow()
    for pid, role in (
        (signal.source_principal_id, "source"),
        (signal.recipient_principal_id, "recipient"),
    ):
        if pid is None:
            continue
        row = session.get(IncidentCulprit, (incident.id, pid))
        if row is None:
            session.add(
                IncidentCulprit(
                    incident_id=incident.id,
                    principal_id=pid,
                    role=role,
                    evidence_count=1,
                    first_seen_at=utcnow(),
                )
            )
        else:
            row.evidence_count += 1


def merge_signal(
    session: Session,
    ledger: Ledger,
    signal_id: int,
    *,
    incident_id: int,
    actor: str,
) -> Signal:
    """Move the signal into another live incident (its principals become culprits there)."""
    signal = get_signal(session, signal_id)
    incident = get_incident(session, incident_id)
    if incident.status not in LIVE_STATUSES:
        raise Conflict(f"incident {incident_id} is {incident.status}; merge into a live one")
    if signal.incident_id == incident.id:
        raise Conflict(f"signal {signal_id} is already in incident {incident_id}")
    was = signal.incident_id
    _attach(session, signal, incident)
    _settle(signal, "confirmed", f"merged into incident {incident.id}", actor)
    session.flush()
    _record(session, ledger, signal, actor, "merged", from_incident=was)
    return signal


def queue_counts(session: Session) -> dict[str, int]:
    """Live incidents, and signals nobody has triaged."""
    live = session.scalar(
        select(func.count()).select_from(Incident).where(Incident.status.in_(LIVE_STATUSES))
    )
    new = session.scalar(select(func.count()).select_from(Signal).where(Signal.triage == "new"))
    return {"incidents": int(live or 0), "triage": int(new or 0)}


def report_in_words(row: AbuseReport) -> dict[str, Any]:
    """A report as ``GET /v1/reports`` lists it, with its outcome, verification and intake
    in words for people; ``why`` is the stored reason when there is one."""
    facts = row.facts or {}
    try:
        intake = DETAILS[Reason(str(facts.get("reason")))]
    except ValueError:
        intake = str(facts.get("reason") or "")
    return {
        **report_view(row),
        "verification": VERIFICATION_WORDS.get(row.verification, row.verification),
        "why": row.reason or OUTCOME_WORDS.get(row.outcome, row.outcome),
        "intake": intake,
        "subject": facts.get("subject"),
    }


__all__ = [
    "confirm_signal",
    "dismiss_signal",
    "get_signal",
    "merge_signal",
    "queue_counts",
    "report_in_words",
    "triage_queue",
]
