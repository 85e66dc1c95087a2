"""What the privacy officer records about an incident's report, each a ledger entry:

- the assessment: the officer's ENISA inputs (each with its reason), the breach window when
  the investigation knows better than the evidence, measures proposed, further likely
  consequences, a description of the breach (``report_assessment``);
- submissions: the report sent to one recipient, phase after phase (GDPR Art. 33(4)), each
  keeping the content as submitted and what changed since the previous phase
  (``report_submission``);
- decisions: to notify a recipient or not, with the reason (``report_decision``); the newest
  per recipient is the one in force.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.db.base import utcnow
from mailveil.detect.incidents import get_incident
from mailveil.errors import Conflict, InvalidInput
from mailveil.incidents import severity
from mailveil.incidents.deadlines import Filing
from mailveil.incidents.models import IncidentAssessment, ReportDecision, ReportSubmission
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event

ASSESSMENT_FIELDS = (
    "severity",
    "breach_from",
    "breach_to",
    "breach_basis",
    "measures_proposed",
    "consequences",
    "nature",
)
SUBMISSION_KINDS = ("initial", "update", "final")
REASONS = {
    # Not notifying:
    "unlikely_risk": "unlikely to result in a risk to people's rights and freedoms "
    "(GDPR Art. 33(1))",
    "no_high_risk": "not likely to result in a high risk to the people (GDPR Art. 34(1))",
    "unintelligible": "the data were unintelligible to anyone not authorised (GDPR Art. 34(3)(a))",
    "risk_removed": "later measures ensure the high risk is no longer likely to materialise "
    "(GDPR Art. 34(3)(b))",
    "public_communication": "telling each person would take disproportionate effort; a public "
    "communication instead (GDPR Art. 34(3)(c))",
    "not_covered_data": "the data are not personal information under this law",
    "below_threshold": "fewer residents than the law's threshold",
    "not_significant": "not a significant incident (NIS2 Art. 23(3))",
    "lead_authority": "reported to the lead supervisory authority instead (GDPR Art. 56)",
    # Notifying:
    "required": "required by the law",
    "precaution": "as a precaution, though not strictly required",
    "other": "other",
}
NOTIFY_REASONS = ("required", "precaution", "other")
MAX_LIST = 30
MAX_CHANGES = 60


def _ledger(
    session: Session,
    ledger: Ledger,
    kind: str,
    actor: str,
    incident_id: int,
    detail: dict[str, Any],
) -> int:
    event = Event(
        kind, actor, f"incident:{incident_id}", detail={"incident": incident_id, **detail}
    )
    return ledger.append(session, [event])[0]


# -- assessment ---------------------------------------------------------------------------


def assessment_values(session: Session, incident_id: int) -> tuple[dict[str, Any], int]:
    row = session.get(IncidentAssessment, incident_id)
    return (dict(row.values), row.version) if row is not None else ({}, 0)


def _text_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise InvalidInput(f"{what} must be a list of at most {MAX_LIST} texts")
    out = [v.text(item, what, 500) for item in value]
    return [item for item in out if item]


def _check_change(name: str, value: Any, actor: str, reason: str, now: datetime) -> Any:
    if name == "severity":
        if not isinstance(value, dict):
            raise InvalidInput("severity must map inputs to values (null: back to the suggestion)")
        return {
            k: None
            if val is None
            else {
                "value": severity.check_input(k, val),
                "reason": reason,
                "by": actor,
                "at": now.isoformat(),
            }
            for k, val in value.items()
        }
    if name in ("breach_from", "breach_to"):
        return None if value in (None, "") else v.moment(value, name).isoformat()
    if name in ("breach_basis", "nature"):
        return v.text(value, name, 2000)
    if name in ("measures_proposed", "consequences"):
        return _text_list(value, name)
    raise InvalidInput(
        f"unknown assessment field {name!r} (allowed: {', '.join(ASSESSMENT_FIELDS)})"
    )


def assess_incident(
    session: Session,
    *,
    ledger: Ledger,
    incident_id: int,
    changes: Mapping[str, Any],
    reason: str,
    actor: str,
    expected_version: int | None = None,
) -> tuple[dict[str, Any], int]:
    """Record the officer's inputs (only the fields given change; a severity input set to
    None goes back to the suggested value). Returns the values and their version. Does not
    commit."""
    get_incident(session, incident_id)
    reason = v.text(reason, "reason", 500, allow_empty=False)
    if not changes:
        raise InvalidInput("nothing to change in the assessment")
    now = utcnow()
    checked = {k: _check_change(k, val, actor, reason, now) for k, val in changes.items()}
    row = session.get(IncidentAssessment, incident_id, with_for_update=True)
    version = row.version if row is not None else 0
    if expected_version is not None and expected_version != version:
        raise Conflict(
            f"the assessment of incident {incident_id} is at version {version}, not "
            f"{expected_version}: someone else changed it; reload and try again"
        )
    values = dict(row.values) if row is not None else {}
    for name, value in checked.items():
        if name == "severity":
            merged = dict(values.get("severity", {}))
            for k, val in value.items():
                if val is None:
                    merged.pop(k, None)
                else:
                    merged[k] = val
            values["severity"] = merged
        else:
            values[name] = value
    frm, to = values.get("breach_from"), values.get("breach_to")
    if frm and to and frm > to:
        raise InvalidInput("breach_from is after breach_to")
    if row is None:
        row = IncidentAssessment(incident_id=incident_id, values=values, version=0)
        session.add(row)
    row.values = values
    row.version = version + 1
    row.updated_at = now
    row.updated_by = actor
    session.flush()
    shown = {
        k: ({i: (x or {}).get("value") for i, x in val.items()} if k == "severity" else val)
        for k, val in checked.items()
    }
    row.ledger_seq = _ledger(
        session,
        ledger,
        "report_assessment",
        actor,
        incident_id,
        {"version": row.version, "changed": shown, "reason": reason},
    )
    session.flush()
    return values, row.version


# -- submissions ----------------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, val in value.items():
            out.update(_flatten(val, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return value if len(text) <= 200 else text[:197] + "…"


def changes_between(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields whose value differs, with both values (long ones shortened)."""
    if before is None:
        return []
    old, new = _flatten(before), _flatten(after)
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(
                {"field": key, "before": _short(old.get(key)), "after": _short(new.get(key))}
            )
    return out[:MAX_CHANGES]


def snapshot_digest(snapshot: dict[str, Any]) -> bytes:
    text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).digest()


def record_submission(
    session: Session,
    *,
    ledger: Ledger,
    incident_id: int,
    obligation: str,
    kind: str,
    snapshot: dict[str, Any],
    actor: str,
    submitted_at: datetime | None = None,
    reference: str = "",
    note: str = "",
) -> ReportSubmission:
    """Record that the report (``snapshot``: its content as submitted) went to the recipient
    of ``obligation``. The first phase is ``initial``; later ones ``update``; ``final``
    closes the series. Does not commit."""
    kind = v.choice(kind, SUBMISSION_KINDS, "kind")
    reference = v.text(reference, "reference", 200)
    note = v.text(note, "note", 2000)
    now = utcnow()
    when = v.moment(submitted_at, "submitted_at") if submitted_at is not None else now
    if when > now:
        raise InvalidInput("submitted_at is in the future")
    rows = list(
        session.scalars(
            select(ReportSubmission)
            .where(
                ReportSubmission.incident_id == incident_id,
                ReportSubmission.obligation == obligation,
            )
            .order_by(ReportSubmission.phase)
            .with_for_update()
        )
    )
    previous = rows[-1] if rows else None
    if previous is None and kind != "initial":
        raise Conflict(f"the first submission for {obligation} is the initial one")
    if previous is not None:
        if previous.kind == "final":
            raise Conflict(f"the final report for {obligation} was already submitted")
        if kind == "initial":
            raise Conflict(f"{obligation} already had its initial submission: this is an update")
        if when < previous.submitted_at:
            raise InvalidInput("a later phase cannot be submitted before the previous one")
    digest = snapshot_digest(snapshot)
    changes = changes_between(previous.snapshot if previous else None, snapshot)
    row = ReportSubmission(
        incident_id=incident_id,
        obligation=obligation,
        phase=len(rows) + 1,
        kind=kind,
        submitted_at=when,
        recorded_at=now,
        reference=reference,
        note=note,
        actor=actor,
        snapshot=snapshot,
        snapshot_sha256=digest,
        changes=changes,
    )
    session.add(row)
    session.flush()
    row.ledger_seq = _ledger(
        session,
        ledger,
        "report_submission",
        actor,
        incident_id,
        {
            "obligation": obligation,
            "phase": row.phase,
            "kind": kind,
            "submitted_at": when.isoformat(),
            "reference": reference,
            "sha256": digest.hex(),
            "changed": [c["field"] for c in changes],
        },
    )
    session.flush()
    return row


def submission_view(row: ReportSubmission) -> dict[str, Any]:
    return {
        "id": row.id,
        "obligation": row.obligation,
        "phase": row.phase,
        "kind": row.kind,
        "submitted_at": row.submitted_at.isoformat(),
        "recorded_at": row.recorded_at.isoformat(),
        "reference": row.reference,
        "note": row.note,
        "actor": row.actor,
        "sha256": row.snapshot_sha256.hex(),
        "changes": row.changes,
        "ledger_seq": row.ledger_seq,
    }


def submissions(session: Session, incident_id: int) -> list[ReportSubmission]:
    return list(
        session.scalars(
            select(ReportSubmission)
            .where(ReportSubmission.incident_id == incident_id)
            .order_by(ReportSubmission.submitted_at, ReportSubmission.id)
        )
    )


# -- decisions ------------------------------------------------------------------------------


def record_decision(
    session: Session,
    *,
    ledger: Ledger,
    incident_id: int,
    obligation: str,
    notify: bool,
    reason_code: str,
    explanation: str,
    actor: str,
) -> ReportDecision:
    """Record a decision to notify the recipient of ``obligation`` or not. A decision not to
    notify needs one of the reasons the law allows and an explanation. Does not commit."""
    get_incident(session, incident_id)
    allowed = NOTIFY_REASONS if notify else tuple(r for r in REASONS if r not in NOTIFY_REASONS[:2])
    reason_code = v.choice(reason_code, allowed, "reason_code")
    explanation = v.text(explanation, "explanation", 2000, allow_empty=False)
    if len(explanation) < 10:
        raise InvalidInput("explanation must say why, in at least 10 characters")
    row = ReportDecision(
        incident_id=incident_id,
        obligation=obligation,
        notify=notify,
        reason_code=reason_code,
        explanation=explanation,
        decided_at=utcnow(),
        actor=actor,
    )
    session.add(row)
    session.flush()
    row.ledger_seq = _ledger(
        session,
        ledger,
        "report_decision",
        actor,
        incident_id,
        {
            "obligation": obligation,
            "notify": notify,
            "reason": reason_code,
            "explanation": explanation,
        },
    )
    session.flush()
    return row


def decision_view(row: ReportDecision) -> dict[str, Any]:
    return {
        "id": row.id,
        "obligation": row.obligation,
        "notify": row.notify,
        "reason_code": row.reason_code,
        "reason": REASONS[row.reason_code],
        "explanation": row.explanation,
        "decided_at": row.decided_at.isoformat(),
        "actor": row.actor,
        "ledger_seq": row.ledger_seq,
    }


def decisions(session: Session, incident_id: int) -> list[ReportDecision]:
    return list(
        session.scalars(
            select(ReportDecision)
            .where(ReportDecision.incident_id == incident_id)
            .order_by(ReportDecision.id)
        )
    )


def filings_by_obligation(
    subs: list[ReportSubmission], decs: list[ReportDecision]
) -> dict[str, Filing]:
    """What was done about each obligation: first submission and phases, decision in force."""
    out: dict[str, Filing] = {}
    for key in {s.obligation for s in subs} | {d.obligation for d in decs}:
        mine = [s for s in subs if s.obligation == key]
        latest = max((d for d in decs if d.obligation == key), key=lambda d: d.id, default=None)
        out[key] = Filing(
            first_submitted_at=min((s.submitted_at for s in mine), default=None),
            phases=len(mine),
            final=any(s.kind == "final" for s in mine),
            decision_notify=latest.notify if latest else None,
            decision_reason=(
                f"{REASONS[latest.reason_code]}: {latest.explanation}" if latest else ""
            ),
            decided_at=latest.decided_at if latest else None,
        )
    return out


__all__ = [
    "ASSESSMENT_FIELDS",
    "NOTIFY_REASONS",
    "REASONS",
    "SUBMISSION_KINDS",
    "assess_incident",
    "assessment_values",
    "changes_between",
    "decision_view",
    "decisions",
    "filings_by_obligation",
    "record_decision",
    "record_submission",
    "snapshot_digest",
    "submission_view",
    "submissions",
]
