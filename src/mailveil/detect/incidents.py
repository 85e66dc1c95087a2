"""Incidents: reading them, moving them through their statuses (each change a ledger entry),
and the timeline of everything that happened, from the ledger."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow
from mailveil.detect.models import INCIDENT_STATUSES, Incident, IncidentCulprit, Signal
from mailveil.detect.signals import signal_view
from mailveil.errors import Conflict, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry, from_time_us

NOTIFY_WITHIN = timedelta(hours=72)  # GDPR Art. 33: the supervisory authority, from detection
# Which status may follow which (closed and dismissed are final).
TRANSITIONS = {
    "open": {"confirmed", "dismissed", "contained", "closed"},
    "confirmed": {"contained", "closed"},
    "contained": {"closed"},
    "closed": set(),
    "dismissed": set(),
}


def get_incident(session: Session, incident_id: int) -> Incident:
    row = session.get(Incident, incident_id)
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    return row


def list_incidents(
    session: Session, *, status: str | None = None, after_id: int | None = None, limit: int = 100
) -> list[Incident]:
    stmt = select(Incident)
    if status is not None:
        stmt = stmt.where(Incident.status == v.choice(status, INCIDENT_STATUSES, "status"))
    if after_id is not None:
        stmt = stmt.where(Incident.id > after_id)
    return list(session.scalars(stmt.order_by(Incident.id).limit(v.page_limit(limit))))


def list_signals(
    session: Session,
    *,
    kind: str | None = None,
    incident_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Signal]:
    stmt = select(Signal)
    if kind is not None:
        stmt = stmt.where(Signal.kind == kind)
    if incident_id is not None:
        stmt = stmt.where(Signal.incident_id == incident_id)
    if after_id is not None:
        stmt = stmt.where(Signal.id > after_id)
    return list(session.scalars(stmt.order_by(Signal.id).limit(v.page_limit(limit))))


def incident_view(
    session: Session, incident: Incident, *, with_signals: bool = False
) -> dict[str, Any]:
    culprits = []
    for c, p in session.execute(
        select(IncidentCulprit, Principal)
        .join(Principal, Principal.id == IncidentCulprit.principal_id)
        .where(IncidentCulprit.incident_id == incident.id)
        .order_by(IncidentCulprit.role.desc(), IncidentCulprit.principal_id)
    ):
        culprits.append(
            {
                "principal_id": p.id,
                "kind": p.kind,
                "external_id": p.external_id,
                "name": p.display_name,
                "status": p.status,
                "role": c.role,
                "evidence": c.evidence_count,
                "strength": c.strength,
                "strong": bool(c.strong),
                "score": c.score,
                # Named only by statistics or weak evidence: containment waits for a
                # second person (``incidents.containment``).
                "confirmation_required": not c.strong,
            }
        )
    deadline = incident.detected_at + NOTIFY_WITHIN
    out: dict[str, Any] = {
        "id": incident.id,
        "status": incident.status,
        "title": incident.title,
        "source_principal_id": incident.source_principal_id,
        "detected_at": incident.detected_at.isoformat(),
        "notify_authority_by": deadline.isoformat(),
        "hours_left_to_notify": round((deadline - utcnow()).total_seconds() / 3600, 1),
        "signal_count": incident.signal_count,
        "culprits": culprits,
        "updated_at": incident.updated_at.isoformat(),
        "closed_at": incident.closed_at.isoformat() if incident.closed_at else None,
        "containment_request": (
            {
                "requested_by": incident.containment_requested_by,
                "requested_at": incident.containment_requested_at.isoformat()
                if incident.containment_requested_at
                else None,
                "reason": incident.containment_reason,
            }
            if incident.containment_requested_by
            else None
        ),
    }
    if with_signals:
        out["signals"] = [
            signal_view(s) for s in list_signals(session, incident_id=incident.id, limit=1000)
        ]
    return out


def set_status(
    session: Session,
    *,
    ledger: Ledger,
    incident_id: int,
    status: str,
    reason: str,
    actor: str,
) -> Incident:
    """Move an incident on (open -> confirmed -> contained -> closed, or dismissed)."""
    incident = get_incident(session, incident_id)
    status = v.choice(status, INCIDENT_STATUSES, "status")
    reason = v.text(reason, "reason", 500, allow_empty=False)
    if status not in TRANSITIONS[incident.status]:
        raise Conflict(f"incident {incident_id} is {incident.status}; it cannot become {status}")
    was = incident.status
    incident.status = status
    incident.updated_at = utcnow()
    if status in ("closed", "dismissed"):
        incident.closed_at = incident.updated_at
    session.flush()
    ledger.append(
        session,
        [
            Event(
                "incident_status",
                actor,
                f"incident:{incident.id}",
                detail={"incident": incident.id, "from": was, "to": status, "reason": reason},
            )
        ],
    )
    return incident


def timeline(session: Session, incident_id: int, *, limit: int = 5000) -> list[dict[str, Any]]:
    """Every ledger entry about the incident, in ledger order: its opening, each signal and
    the entry it came from, status changes, and (later) containment and notices."""
    incident = get_incident(session, incident_id)
    signal_entries = [
        s
        for s in session.scalars(select(Signal.ledger_seq).where(Signal.incident_id == incident.id))
        if s is not None
    ]
    # Details are canonical JSON (sorted keys, no spaces): the id is followed by , or }.
    markers = (f'"incident":{incident.id},', f'"incident":{incident.id}}}')
    stmt = (
        select(LedgerEntry)
        .where(
            or_(
                LedgerEntry.seq.in_(signal_entries or [-1]),
                LedgerEntry.subject == f"incident:{incident.id}",
                (LedgerEntry.kind.in_(("incident_opened", "signal", "incident_action", "notice")))
                & or_(*(LedgerEntry.detail.contains(m) for m in markers)),
            )
        )
        .order_by(LedgerEntry.seq)
        .limit(limit)
    )
    return [
        {
            "seq": e.seq,
            "time": from_time_us(e.time_us).isoformat(),
            "kind": e.kind,
            "actor": e.actor,
            "subject": e.subject,
            "alias": e.alias,
            "detail": json.loads(e.detail),
        }
        for e in session.scalars(stmt)
    ]


__all__ = [
    "NOTIFY_WITHIN",
    "TRANSITIONS",
    "get_incident",
    "incident_view",
    "list_incidents",
    "list_signals",
    "set_status",
    "timeline",
]
