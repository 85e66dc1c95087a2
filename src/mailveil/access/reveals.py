"""Break-glass reveals: an employee's request to see one customer's real address for one
case, granted only by N other approvers, then bound to that employee, customer and case,
short-lived and limited to a number of views. Every step is a ledger entry.

Concurrency: each state change starts by locking the request row with an UPDATE (a row lock
on PostgreSQL, the write lock on SQLite) and reads the request only after it, so two racing
approvers or two concurrent views are serialised and the second sees what the first did.
Shells must start these calls in a fresh transaction (the API commits after authenticating).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.access.contact import find_customer_id
from mailveil.access.employees import acting_employee, in_reporting_line
from mailveil.access.models import OPEN_REVEAL_STATUSES, RevealApproval, RevealRequest
from mailveil.access.refusals import (
    ApprovalMismatch,
    ApprovalReplayed,
    NotYourReveal,
    ReportingLine,
    RevealClosed,
    RevealExpired,
    RevealNotFound,
    RevealNotGranted,
    RevealRefused,
    RevealUsedUp,
    SelfApproval,
)
from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.customers import customer_address
from mailveil.contacts.models import Customer, Principal, SupportCase
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, InvalidInput, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.policy.engine import PolicyEngine
from mailveil.policy.facts import customer_entity_of, principal_entity_of, reveal_input
from mailveil.vault import Vault

JUSTIFICATION_MIN = 20
JUSTIFICATION_MAX = 1000
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class RevealedAddress:
    request_id: int
    customer_id: int
    address: str
    views_left: int
    grant_expires_at: datetime


def _justification(value: Any) -> str:
    text = v.text(value, "justification", JUSTIFICATION_MAX, allow_empty=False).strip()
    if len(text) < JUSTIFICATION_MIN:
        raise InvalidInput(
            f"justification must say why, in at least {JUSTIFICATION_MIN} characters"
        )
    if _CONTROL.search(text):
        raise InvalidInput("justification must not contain control characters")
    if "@" in text:
        # It goes to the ledger, which never holds an address.
        raise InvalidInput("justification must not contain email addresses or '@'")
    return text


def _case_ref(session: Session, request: RevealRequest) -> str:
    return (
        session.scalar(select(SupportCase.external_id).where(SupportCase.id == request.case_id))
        or ""
    )


def _lock(session: Session, request_id: int, actor: str) -> RevealRequest:
    locked = session.execute(
        update(RevealRequest)
        .where(RevealRequest.id == request_id)
        .values(version=RevealRequest.version + 1)
        .returning(RevealRequest.id)
    ).scalar_one_or_none()
    if locked is None:
        raise RevealNotFound(
            f"no reveal request {request_id}", actor=actor, facts={"request": request_id}
        )
    row = session.get(RevealRequest, request_id, populate_existing=True)
    assert row is not None
    return row


def _event(kind: str, actor: str, request: RevealRequest, case_ref: str, **detail: Any) -> Event:
    detail = {"request": request.id, **detail}
    return Event(kind, actor, f"customer:{request.customer_id}", None, "reveal", case_ref, detail)


def request_reveal(
    session: Session,
    *,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    employee_id: int | None,
    customer_id: int,
    case: str,
    justification: Any,
) -> RevealRequest:
    """Open a request (pending). Refusals are raised for the shell to record."""
    employee = acting_employee(session, employee_id, what="reveal requests")
    actor = f"principal:{employee.id}"
    text = _justification(justification)
    case_ref = v.text(case, "case", 255, allow_empty=False)
    cid = find_customer_id(session, actor, customer_id=customer_id, external_id=None)
    customer = session.get(Customer, cid)
    assert customer is not None
    found = session.scalar(select(SupportCase).where(SupportCase.external_id == case_ref))
    subject = f"customer:{cid}"
    if found is None or found.customer_id != cid:
        raise RevealRefused(
            f"case {v.shown(case_ref)} is not a case of customer {cid}",
            actor=actor,
            subject=subject,
            ref=case_ref,
        )
    decision = policy.decide(
        reveal_input(
            principal_entity_of(employee),
            customer_entity_of(customer),
            case_assigned=found.assignee_id == employee.id,
            case_open=found.status == "open",
        )
    )
    if not decision.allowed:
        raise RevealRefused(
            decision.reason,
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts={"policies": list(decision.policy_ids)},
        )
    open_one = session.scalar(
        select(RevealRequest.id).where(
            RevealRequest.requester_id == employee.id,
            RevealRequest.customer_id == cid,
            RevealRequest.case_id == found.id,
            RevealRequest.status.in_(OPEN_REVEAL_STATUSES),
        )
    )
    if open_one is not None:
        raise Conflict(f"reveal request {open_one} for this customer and case is still open")
    now = utcnow()
    row = RevealRequest(
        requester_id=employee.id,
        customer_id=cid,
        case_id=found.id,
        justification=text,
        status="pending",
        approvals_required=settings.reveal_approvals_required,
        approvals=0,
        views_allowed=settings.reveal_views,
        views_used=0,
        version=0,
        created_at=now,
        expires_at=now + timedelta(hours=settings.reveal_request_hours),
    )
    session.add(row)
    session.flush()
    ledger.append(
        session,
        [
            _event(
                "reveal_requested",
                actor,
                row,
                case_ref,
                justification=text,
                approvals_required=row.approvals_required,
                policies=list(decision.policy_ids),
            )
        ],
    )
    return row


def answer_reveal(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    approver_id: int | None,
    request_id: int,
    approve: bool,
    customer_id: int,
    case: str,
    note: str = "",
) -> RevealRequest:
    """One approver's approval or denial. The answer must name the request's customer and
    case (an approval cannot be carried over to another request)."""
    actor = f"principal:{approver_id}"
    request = _lock(session, request_id, actor)
    approver = acting_employee(session, approver_id, what="reveal approvals")
    case_ref = _case_ref(session, request)
    subject = f"customer:{request.customer_id}"
    facts = {"request": request.id}
    if request.customer_id != customer_id or case_ref != case:
        raise ApprovalMismatch(
            f"reveal request {request.id} is for another customer or case",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        )
    if request.requester_id == approver.id:
        raise SelfApproval(
            "nobody may answer their own reveal request",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        )
    requester = session.get(Principal, request.requester_id)
    if requester is not None and in_reporting_line(session, requester, approver):
        raise ReportingLine(
            "the approver is in the requester's reporting line",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        )
    now = utcnow()
    if request.status != "pending":
        raise RevealClosed(
            f"reveal request {request.id} is {request.status}",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        )
    if request.expires_at <= now:
        raise RevealExpired(
            f"reveal request {request.id} expired unanswered",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        )
    note = v.text(note, "note", 500)
    if "@" in note:
        raise InvalidInput("note must not contain email addresses or '@'")
    try:
        with session.begin_nested():
            session.add(
                RevealApproval(
                    request_id=request.id,
                    approver_id=approver.id,
                    decision="approve" if approve else "deny",
                    note=note,
                    created_at=now,
                )
            )
    except IntegrityError:
        raise ApprovalReplayed(
            f"this approver already answered reveal request {request.id}",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        ) from None
    events: list[Event] = []
    if not approve:
        request.status = "denied"
        request.closed_at = now
        request.closed_reason = f"denied by principal:{approver.id}"
        events.append(_event("reveal_denied", actor, request, case_ref, note=note))
    else:
        request.approvals += 1
        events.append(
            _event(
                "reveal_approved",
                actor,
                request,
                case_ref,
                approvals=request.approvals,
                approvals_required=request.approvals_required,
                note=note,
            )
        )
        if request.approvals >= request.approvals_required:
            request.status = "granted"
            request.granted_at = now
            request.grant_expires_at = now + timedelta(minutes=settings.reveal_grant_minutes)
            events.append(
                _event(
                    "reveal_granted",
                    "system",
                    request,
                    case_ref,
                    requester=f"principal:{request.requester_id}",
                    views=request.views_allowed,
                    expires_at=request.grant_expires_at.isoformat(),
                )
            )
    session.flush()
    ledger.append(session, events)
    return request


def view_reveal(
    session: Session,
    *,
    ledger: Ledger,
    vault: Vault,
    employee_id: int | None,
    request_id: int,
) -> RevealedAddress:
    """Use one view of a granted reveal: the real address, once per allowed view."""
    actor = f"principal:{employee_id}"
    request = _lock(session, request_id, actor)
    employee = acting_employee(session, employee_id, what="reveals")
    case_ref = _case_ref(session, request)
    subject = f"customer:{request.customer_id}"
    facts = {"request": request.id}
    if request.requester_id != employee.id:
        raise NotYourReveal(
            f"reveal request {request.id} belongs to another employee",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        )
    now = utcnow()
    refusal: (
        type[RevealClosed]
        | type[RevealNotGranted]
        | type[RevealExpired]
        | type[RevealUsedUp]
        | None
    ) = None
    if request.status == "pending":
        refusal = RevealNotGranted
    elif request.status == "used" or (
        request.status == "granted" and request.views_used >= request.views_allowed
    ):
        refusal = RevealUsedUp
    elif request.status == "expired" or (
        request.status == "granted"
        and request.grant_expires_at is not None
        and request.grant_expires_at <= now
    ):
        refusal = RevealExpired
    elif request.status != "granted":
        refusal = RevealClosed
    if refusal is not None:
        raise refusal(
            f"reveal request {request.id} cannot be viewed ({request.status})",
            actor=actor,
            subject=subject,
            ref=case_ref,
            facts=facts,
        )
    customer = session.get(Customer, request.customer_id)
    assert customer is not None and request.grant_expires_at is not None
    request.views_used += 1
    if request.views_used >= request.views_allowed:
        request.status = "used"
        request.closed_at = now
        request.closed_reason = "all views used"
    session.flush()
    ledger.append(
        session,
        [
            _event(
                "reveal_viewed",
                actor,
                request,
                case_ref,
                view=request.views_used,
                views=request.views_allowed,
                team=str((employee.attributes or {}).get("team") or ""),
            )
        ],
    )
    return RevealedAddress(
        request.id,
        request.customer_id,
        customer_address(session, vault, customer),
        request.views_allowed - request.views_used,
        request.grant_expires_at,
    )


def close_open_reveals(
    session: Session,
    *,
    ledger: Ledger,
    where: Any,
    status: str,
    reason: str,
    actor: str,
    kind: str,
) -> int:
    """Close every open request matching ``where`` (expiry, suspension); one entry each."""
    now = utcnow()
    rows = list(
        session.scalars(
            select(RevealRequest)
            .where(where, RevealRequest.status.in_(OPEN_REVEAL_STATUSES))
            .with_for_update()
        )
    )
    events = []
    for row in rows:
        was = row.status
        row.status = status
        row.closed_at = now
        row.closed_reason = reason
        row.version += 1
        events.append(_event(kind, actor, row, _case_ref(session, row), was=was, reason=reason))
    session.flush()
    ledger.append(session, events)
    return len(rows)


def expire_reveals(session: Session, *, ledger: Ledger, now: datetime | None = None) -> int:
    """Mark lapsed requests and grants expired (the serve loop runs this every minute)."""
    now = now or utcnow()
    lapsed = or_(
        (RevealRequest.status == "pending") & (RevealRequest.expires_at <= now),
        (RevealRequest.status == "granted") & (RevealRequest.grant_expires_at <= now),
    )
    return close_open_reveals(
        session,
        ledger=ledger,
        where=lapsed,
        status="expired",
        reason="expired",
        actor="system",
        kind="reveal_expired",
    )


def list_reveals(
    session: Session,
    *,
    status: str | None = None,
    requester_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[RevealRequest]:
    stmt = select(RevealRequest)
    if status is not None:
        stmt = stmt.where(RevealRequest.status == status)
    if requester_id is not None:
        stmt = stmt.where(RevealRequest.requester_id == requester_id)
    if after_id is not None:
        stmt = stmt.where(RevealRequest.id > after_id)
    return list(session.scalars(stmt.order_by(RevealRequest.id).limit(v.page_limit(limit))))


def count_reveals(session: Session, status: str) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(RevealRequest).where(RevealRequest.status == status)
        )
        or 0
    )


def recent_of_requester(
    session: Session, requester_id: int, *, limit: int = 10
) -> list[RevealRequest]:
    """A requester's latest reveal requests, newest first: what an approver weighs."""
    return list(
        session.scalars(
            select(RevealRequest)
            .where(RevealRequest.requester_id == requester_id)
            .order_by(RevealRequest.id.desc())
            .limit(limit)
        )
    )


def get_reveal(session: Session, request_id: int) -> RevealRequest:
    row = session.get(RevealRequest, request_id)
    if row is None:
        raise NotFound(f"no reveal request {request_id}")
    return row


def reveal_view(session: Session, row: RevealRequest) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "id": row.id,
        "requester_id": row.requester_id,
        "customer_id": row.customer_id,
        "case": _case_ref(session, row),
        "justification": row.justification,
        "status": row.status,
        "approvals": row.approvals,
        "approvals_required": row.approvals_required,
        "views_allowed": row.views_allowed,
        "views_used": row.views_used,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "granted_at": iso(row.granted_at),
        "grant_expires_at": iso(row.grant_expires_at),
        "closed_at": iso(row.closed_at),
        "closed_reason": row.closed_reason,
    }


__all__ = [
    "JUSTIFICATION_MIN",
    "RevealedAddress",
    "answer_reveal",
    "close_open_reveals",
    "count_reveals",
    "expire_reveals",
    "get_reveal",
    "list_reveals",
    "recent_of_requester",
    "request_reveal",
    "reveal_view",
    "view_reveal",
]
