"""Recording signals and grouping them into incidents by the principal they point back to.

A signal carries its evidence as pieces (``strength``): each names a principal in a role
(``source``: whom the data was disclosed to; ``recipient``: who was found holding it), with
how sure it is. Only counted pieces set the signal's source and recipient; claimed ones are
kept and shown, and never make a culprit. A signal with a counted source joins that
principal's open incident (open, confirmed or contained), or opens one; the principals of its
counted pieces become the incident's culprits, each with the strongest strength that named
it. Each new signal and each new incident is a ledger entry, so the incident's timeline is
the ledger's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow
from mailveil.detect.models import Incident, IncidentCulprit, Signal
from mailveil.detect.strength import Piece, Strength, counted, pieces_of, stronger
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event

LIVE_STATUSES = ("open", "confirmed", "contained")


def _title(session: Session, principal_id: int | None, kind: str) -> str:
    principal = session.get(Principal, principal_id) if principal_id is not None else None
    if principal is None:
        return f"{kind.replace('_', ' ')} with no known source"
    name = principal.display_name or principal.external_id
    return f"contact data leaked from {principal.kind} {name}"[:300]


def _culprit(session: Session, incident: Incident, piece: Piece, now: datetime) -> None:
    assert piece.principal_id is not None and piece.counted
    row = session.get(IncidentCulprit, (incident.id, piece.principal_id))
    if row is None:
        session.add(
            IncidentCulprit(
                incident_id=incident.id,
                principal_id=piece.principal_id,
                role=piece.role,
                evidence_count=1,
                first_seen_at=now,
                strength=piece.strength,
                strong=piece.strong,
                score=piece.score,
            )
        )
        session.flush()
    else:
        row.evidence_count += 1
        row.strength = stronger(row.strength, piece.strength)
        row.strong = bool(row.strong) or piece.strong
        if piece.score is not None:
            row.score = max(row.score or piece.score, piece.score)


_LEGACY_BASIS = {"exact": "alias-disclosure", "ranked": "guilt-ranking"}


def legacy_pieces(
    confidence: str, source: int | None, recipient: int | None, score: float | None
) -> list[Piece]:
    """Pieces for a caller that names principals directly (no ``pieces``): an ``exact``
    signal is a relay record, a ``ranked`` or ``anomaly`` one a statistical inference."""
    exact = confidence == "exact"
    strength: Strength = "relay-record" if exact else "statistical"
    basis = _LEGACY_BASIS.get(confidence, "access-anomaly")
    out = []
    if source is not None:
        out.append(
            Piece("source", source, strength, basis, f"{confidence} signal",
                  counted=True, weak=not exact, score=None if exact else score)
        )  # fmt: skip
    if recipient is not None and recipient != source:
        out.append(
            Piece("recipient", recipient, strength, basis, f"{confidence} signal",
                  counted=True, weak=not exact)
        )  # fmt: skip
    return out


def incident_for(
    session: Session,
    ledger: Ledger,
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
    ledger.append(
        session,
        [
            Event(
                "incident_opened", "system", source, detail={"incident": incident.id, "kind": kind}
            )
        ],
    )
    return incident, True


def record_signal(
    session: Session,
    ledger: Ledger,
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
    pieces: list[Piece] | None = None,
) -> Signal:
    """Store a signal (idempotent per (kind, ledger entry)) and file it under an incident.

    ``pieces``: its evidence (``strength``); the counted source and recipient pieces name its
    principals. Without them, ``source_principal_id`` and ``recipient_principal_id`` are
    taken as counted pieces of the strength ``confidence`` implies (``legacy_pieces``)."""
    if pieces is None:
        pieces = legacy_pieces(confidence, source_principal_id, recipient_principal_id, score)
    source_piece = counted(pieces, "source")
    recipient_piece = counted(pieces, "recipient")
    source_principal_id = source_piece.principal_id if source_piece else None
    recipient_principal_id = recipient_piece.principal_id if recipient_piece else None
    if ledger_seq is not None:
        existing = session.scalar(
            select(Signal).where(Signal.kind == kind, Signal.ledger_seq == ledger_seq)
        )
        if existing is not None:
            return existing
    now = utcnow()
    any_source = source_piece or next((p for p in pieces if p.role == "source"), None)
    any_recipient = recipient_piece or next((p for p in pieces if p.role == "recipient"), None)
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
        evidence={**(evidence or {}), "pieces": [p.to_dict() for p in pieces]},
        ledger_seq=ledger_seq,
        source_strength=any_source.strength if any_source else None,
        recipient_strength=any_recipient.strength if any_recipient else None,
        candidate_source_id=any_source.principal_id if any_source else None,
    )
    session.add(signal)
    session.flush()
    events = []
    if group and source_piece is not None and source_principal_id is not None:
        join_incident(session, ledger, signal, [source_piece, recipient_piece], now)
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
    detail["strength"] = {"source": signal.source_strength, "recipient": signal.recipient_strength}
    subject = f"customer:{customer_id}" if customer_id is not None else None
    events.append(Event("signal", "system", subject, alias, None, None, detail))
    ledger.append(session, events)
    session.flush()
    return signal


def join_incident(
    session: Session,
    ledger: Ledger,
    signal: Signal,
    named: list[Piece | None],
    now: datetime,
) -> Incident:
    """File ``signal`` under its source's live incident (opened if need be) and count the
    counted pieces ``named`` as that incident's culprits."""
    assert signal.source_principal_id is not None
    incident, _new = incident_for(session, ledger, signal.source_principal_id, signal.kind, now)
    signal.incident_id = incident.id
    incident.signal_count += 1
    incident.updated_at = now
    seen: set[int] = set()
    for piece in named:
        if piece is None or piece.principal_id is None or not piece.counted:
            continue
        if piece.principal_id not in seen:
            _culprit(session, incident, piece, now)
            seen.add(piece.principal_id)
    return incident


def promote_source(
    session: Session,
    ledger: Ledger,
    signal: Signal,
    reason: str,
    *,
    weak: bool,
) -> None:
    """Count a signal's source piece that was waiting for corroboration (``attribution``):
    the signal joins its source's incident and the change is a ledger entry."""
    pieces = pieces_of(signal.evidence)
    updated: list[Piece] = []
    for p in pieces:
        if p.role == "source" and not p.counted and p.principal_id is not None:
            p = Piece(p.role, p.principal_id, p.strength, p.basis, reason,
                      counted=True, weak=weak, score=p.score, entry=p.entry)  # fmt: skip
        updated.append(p)
    source = counted(updated, "source")
    if source is None:
        return
    signal.evidence = {**signal.evidence, "pieces": [p.to_dict() for p in updated]}
    signal.source_principal_id = source.principal_id
    signal.source_strength = source.strength
    now = utcnow()
    incident = join_incident(session, ledger, signal, [source, counted(updated, "recipient")], now)
    detail = {
        "signal": signal.id,
        "kind": signal.kind,
        "promoted": True,
        "incident": incident.id,
        "from_entry": signal.ledger_seq,
        "source": f"principal:{source.principal_id}",
        "reason": reason[:300],
    }
    subject = f"customer:{signal.customer_id}" if signal.customer_id is not None else None
    ledger.append(
        session,
        [Event("signal", "system", subject, signal.alias, None, None, detail)],
    )
    session.flush()


def signal_view(signal: Signal) -> dict[str, Any]:
    pieces = [p.to_dict() for p in pieces_of(signal.evidence)]
    evidence = {k: v for k, v in (signal.evidence or {}).items() if k != "pieces"}
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
        "strength": {"source": signal.source_strength, "recipient": signal.recipient_strength},
        "pieces": pieces,
        "evidence": evidence,
        "ledger_seq": signal.ledger_seq,
        "incident_id": signal.incident_id,
    }


__all__ = [
    "LIVE_STATUSES",
    "incident_for",
    "join_incident",
    "legacy_pieces",
    "promote_source",
    "record_signal",
    "signal_view",
]
