"""Containment: one action that stops a confirmed leak where it is.

Every culprit principal of the incident (source and recipient) is suspended, every alias
disclosed to it is revoked (the relay refuses mail to a revoked alias from anyone, and a
stranger writing to one is still a signal), its open reveal requests and grants are revoked,
and the open sends of templates it owns are killed (a culprit service's notifications
stop). A principal already suspended is not suspended again, but anything disclosed to it
since is still revoked. All of it is in the ledger, and the
incident becomes ``contained``.

Suspension on weak evidence is the framer's prize, so each culprit's evidence strength
(``detect.strength``) decides who may contain it. When every culprit has strong evidence
(a relay record or an authenticated identity), one investigator contains. When any culprit
was named only by statistics (guilt ranking, anomaly scores) or by evidence its customers'
own side could explain, the first call records a containment *request* (a ledger entry
listing each culprit's strength) and changes nothing; a second, different person confirms
it with the same call. The requester confirming their own request is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.suspension import revoke_everything, suspend_principal
from mailveil.contacts import validation as v
from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow
from mailveil.detect.incidents import get_incident
from mailveil.detect.models import Incident, IncidentCulprit, Signal
from mailveil.detect.strength import pieces_of
from mailveil.errors import Conflict, InvalidInput
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.notify.sends import kill_sends_of

MAX_PIECES_SHOWN = 20  # per culprit, in the answer and the ledger entry


@dataclass
class Containment:
    incident_id: int
    status: str = "contained"  # or "awaiting_confirmation"
    requested_by: str | None = None
    confirmed_by: str | None = None
    culprits: list[dict[str, Any]] = field(default_factory=list)
    suspended: list[int] = field(default_factory=list)
    already_suspended: list[int] = field(default_factory=list)
    aliases_revoked: int = 0
    reveals_revoked: int = 0
    sends_cancelled: int = 0
    ledger_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "status": self.status,
            "requested_by": self.requested_by,
            "confirmed_by": self.confirmed_by,
            "culprits": self.culprits,
            "suspended": self.suspended,
            "already_suspended": self.already_suspended,
            "aliases_revoked": self.aliases_revoked,
            "reveals_revoked": self.reveals_revoked,
            "sends_cancelled": self.sends_cancelled,
            "ledger_seq": self.ledger_seq,
        }


def contain(
    session: Session,
    *,
    ledger: Ledger,
    incident_id: int,
    reason: str,
    actor: str,
) -> Containment:
    """Contain the incident. Does not commit."""
    reason = v.text(reason, "reason", 500, allow_empty=False).strip()
    incident = get_incident(session, incident_id)
    if incident.status not in ("open", "confirmed"):
        raise Conflict(
            f"incident {incident_id} is {incident.status}; "
            "only an open or confirmed incident is contained"
        )
    rows = list(
        session.scalars(
            select(IncidentCulprit)
            .where(IncidentCulprit.incident_id == incident_id)
            .order_by(IncidentCulprit.principal_id)
        )
    )
    if not rows:
        raise InvalidInput(f"incident {incident_id} names no culprit: nothing to contain")
    pieces = _counted_pieces(session, incident_id)
    culprits = [
        {
            "principal_id": c.principal_id,
            "role": c.role,
            "strength": c.strength,
            "strong": bool(c.strong),
            "score": c.score,
            "evidence": c.evidence_count,
            "pieces": pieces.get(c.principal_id, [])[:MAX_PIECES_SHOWN],
        }
        for c in rows
    ]
    out = Containment(incident_id, culprits=culprits)
    if any(not c.strong for c in rows):
        requested_by = incident.containment_requested_by
        if requested_by is None:
            return _request(session, ledger, incident, out, reason, actor)
        if requested_by == actor:
            raise Conflict(
                f"incident {incident_id} names a culprit on weak evidence: containment "
                f"was requested by {actor} and must be confirmed by another person"
            )
        out.requested_by, out.confirmed_by = requested_by, actor
    why = f"incident {incident_id}: {reason}"
    for pid in (c.principal_id for c in rows):
        principal = session.get(Principal, pid, with_for_update=True)
        if principal is None:
            continue
        if principal.status == "suspended":
            out.already_suspended.append(pid)
            aliases, reveals = revoke_everything(
                session, ledger=ledger, principal_id=pid, reason=why, actor=actor
            )
        else:
            done = suspend_principal(
                session, ledger=ledger, principal_id=pid, reason=why, actor=actor
            )
            out.suspended.append(pid)
            aliases, reveals = done.aliases_revoked, done.reveals_revoked
        out.aliases_revoked += aliases
        out.reveals_revoked += reveals
        out.sends_cancelled += kill_sends_of(session, ledger, pid, actor=actor)
    was = incident.status
    incident.status = "contained"
    incident.updated_at = utcnow()
    incident.containment_requested_by = None
    incident.containment_requested_at = None
    incident.containment_reason = None
    session.flush()
    detail = {
        "incident": incident_id,
        "action": "contain",
        "from": was,
        "reason": reason,
        **out.to_dict(),
    }
    detail.pop("ledger_seq")
    detail.pop("incident_id")
    out.ledger_seq = _ledger(session, ledger, actor, incident_id, detail)
    return out


def _counted_pieces(session: Session, incident_id: int) -> dict[int, list[dict[str, Any]]]:
    """Each culprit's counted pieces of evidence in the incident, with their signal."""
    out: dict[int, list[dict[str, Any]]] = {}
    for signal_id, evidence in session.execute(
        select(Signal.id, Signal.evidence)
        .where(Signal.incident_id == incident_id)
        .order_by(Signal.id)
    ):
        for piece in pieces_of(evidence):
            if piece.counted and piece.principal_id is not None:
                shown = {"signal": signal_id, **piece.to_dict()}
                out.setdefault(piece.principal_id, []).append(shown)
    return out


def _ledger(
    session: Session,
    ledger: Ledger,
    actor: str,
    incident_id: int,
    detail: dict[str, Any],
) -> int:
    # The ledger keeps which signals and how strong, not the reasons (they are the signals').
    if "culprits" in detail:
        detail["culprits"] = [
            {
                **{k: v for k, v in c.items() if k != "pieces"},
                "pieces": [
                    {"signal": p["signal"], "strength": p["strength"], "basis": p["basis"],
                     "weak": p["weak"]}
                    for p in c.get("pieces", [])
                ],
            }
            for c in detail["culprits"]
        ]  # fmt: skip
    event = Event("incident_action", actor, f"incident:{incident_id}", detail=detail)
    return ledger.append(session, [event])[0]


def _request(
    session: Session,
    ledger: Ledger,
    incident: Incident,
    out: Containment,
    reason: str,
    actor: str,
) -> Containment:
    """Record the first person's request to contain on weak evidence; nothing else yet."""
    incident.containment_requested_by = actor[:200]
    incident.containment_requested_at = utcnow()
    incident.containment_reason = reason
    incident.updated_at = incident.containment_requested_at
    session.flush()
    out.status, out.requested_by = "awaiting_confirmation", actor
    detail = {
        "incident": incident.id,
        "action": "contain_requested",
        "reason": reason,
        "culprits": out.culprits,
    }
    out.ledger_seq = _ledger(session, ledger, actor, incident.id, detail)
    return out


__all__ = ["Containment", "contain"]
