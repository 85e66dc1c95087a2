"""Refusals of employee access: each has its own problem code, is written to the ledger
(kind ``access_refused``) and counted, because a refusal is itself a signal input: guessing
customer ids, replaying approvals and running into limits are what an insider does first.

Domain code raises an ``AccessRefused``; the shell (API, CLI) calls ``record_refusal`` which
rolls back the request's work, appends the refusal and commits, then lets the error answer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mailveil.errors import MailveilError
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event

REFUSAL_KIND = "access_refused"


class AccessRefused(MailveilError):
    """Base: an employee (or approver) asked for something they may not have."""

    code = "access-refused"
    status = 403
    title = "Access refused"

    def __init__(
        self,
        detail: str,
        *,
        actor: str,
        subject: str | None = None,
        ref: str | None = None,
        facts: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.actor = actor
        self.subject = subject
        self.ref = ref
        self.facts = facts or {}

    def event(self) -> Event:
        detail = {"code": self.code, "reason": self.detail, **self.facts}
        return Event(REFUSAL_KIND, self.actor, self.subject, None, None, self.ref, detail)


class EmployeeSuspended(AccessRefused):
    code = "principal-suspended"
    title = "The principal is suspended"


class NotAnEmployee(AccessRefused):
    code = "not-an-employee"
    title = "Only employees may do this"


class UnknownCustomer(AccessRefused):
    # 404 like any unknown id, but ledgered: walking ids is how guessing looks.
    code = "unknown-customer"
    status = 404
    title = "No such customer"


class LimitExceeded(AccessRefused):
    code = "limit-exceeded"
    status = 429
    title = "Employee access limit exceeded"


class NotAnApprover(AccessRefused):
    code = "not-an-approver"
    title = "Only approvers may answer reveal requests"


class RevealNotFound(AccessRefused):
    code = "reveal-not-found"
    status = 404
    title = "No such reveal request"


class RevealRefused(AccessRefused):
    code = "reveal-refused"
    title = "Reveal refused"


class SelfApproval(AccessRefused):
    code = "self-approval"
    title = "Nobody approves their own reveal"


class ReportingLine(AccessRefused):
    code = "approver-in-reporting-line"
    title = "The approver is in the requester's reporting line"


class ApprovalMismatch(AccessRefused):
    code = "approval-mismatch"
    status = 409
    title = "The approval names a different customer or case"


class ApprovalReplayed(AccessRefused):
    code = "approval-replayed"
    status = 409
    title = "This approver has already answered this request"


class RevealClosed(AccessRefused):
    code = "reveal-closed"
    status = 409
    title = "The reveal request is no longer open"


class RevealNotGranted(AccessRefused):
    code = "reveal-not-granted"
    status = 409
    title = "The reveal has not been granted"


class RevealExpired(AccessRefused):
    code = "reveal-expired"
    status = 410
    title = "The reveal has expired"


class RevealUsedUp(AccessRefused):
    code = "reveal-used-up"
    status = 410
    title = "The reveal's views are used up"


class NotYourReveal(AccessRefused):
    code = "reveal-not-yours"
    title = "Only the requester may view a granted reveal"


def record_refusal(session: Session, ledger: Ledger, refusal: AccessRefused) -> int:
    """Undo the refused request's work, write the refusal to the ledger and commit it."""
    session.rollback()
    seq = ledger.append(session, [refusal.event()])[0]
    session.commit()
    return seq


__all__ = [
    "REFUSAL_KIND",
    "AccessRefused",
    "ApprovalMismatch",
    "ApprovalReplayed",
    "EmployeeSuspended",
    "LimitExceeded",
    "NotAnApprover",
    "NotAnEmployee",
    "NotYourReveal",
    "ReportingLine",
    "RevealClosed",
    "RevealExpired",
    "RevealNotFound",
    "RevealNotGranted",
    "RevealRefused",
    "RevealUsedUp",
    "SelfApproval",
    "UnknownCustomer",
    "record_refusal",
]
