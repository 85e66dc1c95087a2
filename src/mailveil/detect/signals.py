"""Recording signals and grouping them into incidents by the principal they point back to.

A signal with a source principal joins that principal's open incident (open, confirmed or
contained), or opens one; both principals a signal names become the incident's culprits
(``source``: whom the data was disclosed to; ``recipient``: who was found holding it). Each
new signal and each new incident is a ledger entry, so the incident's timeline is the
ledger's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow
from mailveil.detect.models import Incident, IncidentCulprit, Signal
from mailveil.ledger.append import append
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner

LIVE_STATUSES = ("open", "confirmed", "contained")


def _title(session: Session, principal_id: int | None, kind: str) -> str:
    principal = session.get(Principal, principal_id) if principal_id is not None else None
    if principal is None:
        return f"{kind.replace('_', ' ')} with no known source"
    name = principal.display_name or principal.external_id
    return f"contact data leaked from {principal.kind} {name}"[:300]


def _culprit(
    session: Session, incident: Incident, principal_id: int, role: str, now: datetime
) -> None:
    row = session.get(IncidentCulprit, (incident.id, principal_id))
    if row is None:
        session.add(
            IncidentCulprit(
                incident_id=incident.id,
                principal_id=principal_id,
                role=role,
                evidence_count=1,
                first_seen_at=now,
            )
        )
    else:
        row.evidence_count += 1


def incident_for(
    session: Session,
    settings: Settings,
    signer: CheckpointSigner,
    source_principal_id: int | None,
    kind: str,
    now: datetime,
) -> tuple[Incident, bool]:
    """The live incident of this source principal, or a new one (and whether it is new)."""
    if source_principal_id is not None:
        found = session.scalar(
            select(Incident)
            .where(
                Incident.source_principal_id == source_principal_id,
                Incident.status.in_(LIVE_STATUSES),
            )
            .order_by(Incident.id)
            .limit(1)
        )
        if found is not None:
            return found, False
    incident = Incident(
        status="open",
        title=_title(session, source_principal_id, kind),
        source_principal_id=source_principal_id,
        detected_at=now,
        opened_at=now,
        updated_at=now,
        signal_count=0,
    )
    session.add(incident)
    session.flush()
    source = f"principal:{source_principal_id}" if source_principal_id is not None else None
    append(
        session,
        [
            Event(
                "incident_opened", "system", source, detail={"incident": incident.id, "kind": kind}
            )
        ],
        settings,
        signer,
    )
    return incident, True


def record_signal(
    session: Session,
    settings: Settings,
    signer: CheckpointSigner,
    *,
    kind: str,
    confidence: str,
    summary: str,
    source_principal_id: int | None = None,
    recipient_principal_id: int | None = None,
    customer_id: int | None = None,
    alias: str | None = None,
    score: float | None = None,
    evidence: dict[str, Any] | None = None,
    ledger_seq: int | None = None,
    group: bool = True,
) -> Signal:
    """Store a signal (idempotent per (kind, ledger entry)) and file it under an incident."""
    if ledger_seq is not None:
        existing = session.scalar(
            select(Signal).where(Signal.kind == kind, Signal.ledger_seq == ledger_seq)
        )
        if existing is not None:
            return existing
    now = utcnow()
    signal = Signal(
        kind=kind,
        created_at=now,
        source_principal_id=source_principal_id,
        recipient_principal_id=recipient_principal_id,
        customer_id=customer_id,
        alias=alias,
        confidence=confidence,
        score=score,
        summary=summary[:500],
        evidence=evidence or {},
        ledger_seq=ledger_seq,
    )
    session.add(signal)
    session.flush()
    events = []
    if group and source_principal_id is not None:
        incident, _new = incident_for(session, settings, signer, source_principal_id, kind, now)
        signal.incident_id = incident.id
        incident.signal_count += 1
        incident.updated_at = now
        if source_principal_id is not None:
            _culprit(session, incident, source_principal_id, "source", now)
        if recipient_principal_id is not None and recipient_principal_id != source_principal_id:
            _culprit(session, incident, recipient_principal_id, "recipient", now)
    detail: dict[str, Any] = {
        "signal": signal.id,
        "kind": kind,
        "confidence": confidence,
        "incident": signal.incident_id,
        "from_entry": ledger_seq,
    }
    if source_principal_id is not None:
        detail["source"] = f"principal:{source_principal_id}"
    if recipient_principal_id is not None:
        detail["recipient"] = f"principal:{recipient_principal_id}"
    subject = f"customer:{customer_id}" if customer_id is not None else None
    events.append(Event("signal", "system", subject, alias, None, None, detail))
    append(session, events, settings, signer)
    session.flush()
    return signal


def signal_view(signal: Signal) -> dict[str, Any]:
    return {
        "id": signal.id,
        "kind": signal.kind,
        "created_at": signal.created_at.isoformat(),
        "confidence": signal.confidence,
        "score": signal.score,
        "summary": signal.summary,
        "source_principal_id": signal.source_principal_id,
        "recipient_principal_id": signal.recipient_principal_id,
        "customer_id": signal.customer_id,
        "alias": signal.alias,
        "evidence": signal.evidence,
        "ledger_seq": signal.ledger_seq,
        "incident_id": signal.incident_id,
    }


__all__ = ["LIVE_STATUSES", "incident_for", "record_signal", "signal_view"]
