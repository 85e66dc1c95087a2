"""Break-glass reveals: employees request, approvers answer, the requester views once.

Every refusal (self-approval, a replayed or mismatched approval, an expired or used-up grant,
a suspended employee, someone without the approver role) is a problem with its own code and
a ledger entry. Reading a real address answers with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mailveil.access.refusals import NotAnApprover
from mailveil.access.reveals import (
    answer_reveal,
    get_reveal,
    list_reveals,
    request_reveal,
    reveal_view,
    view_reveal,
)
from mailveil.api.access_shell import refusals_recorded
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Cursor, Id, Limit
from mailveil.auth.keys import Caller, Role
from mailveil.errors import Forbidden

router = APIRouter(prefix="/v1/reveals", tags=["reveals"])
EmployeeDep = Annotated[Caller, Depends(RoleGate(Role.EMPLOYEE))]
# Answering is open to every principal-bound staff key so that a missing approver role is
# refused *and recorded*, not just bounced by the role gate.
StaffDep = Annotated[Caller, Depends(RoleGate(Role.EMPLOYEE, Role.APPROVER))]
ReaderDep = Annotated[
    Caller, Depends(RoleGate(Role.EMPLOYEE, Role.APPROVER, Role.ADMIN, Role.INVESTIGATOR))
]
Status = Literal["pending", "granted", "denied", "expired", "used", "revoked"]


class RevealIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: Id
    case: str = Field(max_length=255, description="the support case's external id")
    justification: str = Field(max_length=1000, description="why, in at least 20 characters")


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: Id = Field(description="must be the request's customer")
    case: str = Field(max_length=255, description="must be the request's case")
    note: str = Field(default="", max_length=500)


@router.post("", status_code=201)
def post_reveal(
    body: RevealIn, request: Request, session: SessionDep, runtime: RuntimeDep, caller: EmployeeDep
) -> dict[str, Any]:
    """Ask to see a customer's real address for an open case assigned to you."""
    with refusals_recorded(request, session, runtime):
        row = request_reveal(
            session,
            settings=runtime.settings,
            policy=runtime.policy,
            ledger=runtime.ledger,
            employee_id=caller.principal_id,
            customer_id=body.customer_id,
            case=body.case,
            justification=body.justification,
        )
    session.commit()
    request.app.state.metrics.reveals.labels("requested").inc()
    return reveal_view(session, row)


@router.get("")
def get_reveals(
    session: SessionDep,
    caller: ReaderDep,
    status: Annotated[Status | None, Query()] = None,
    after: Annotated[Cursor | None, Query(ge=0)] = None,
    limit: Annotated[Limit | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    """Employees see their own requests; approvers, admins and investigators see all."""
    mine = caller.principal_id if caller.role == Role.EMPLOYEE else None
    rows = list_reveals(
        session, status=status, requester_id=mine, after_id=after, limit=limit or 100
    )
    return {
        "items": [reveal_view(session, r) for r in rows],
        "next": rows[-1].id if rows and len(rows) == (limit or 100) else None,
    }


@router.get("/{request_id}")
def get_one_reveal(request_id: Id, session: SessionDep, caller: ReaderDep) -> dict[str, Any]:
    row = get_reveal(session, request_id)
    if caller.role == Role.EMPLOYEE and row.requester_id != caller.principal_id:
        raise Forbidden("an employee sees only its own reveal requests")
    return reveal_view(session, row)


def _answer(
    request_id: Id,
    body: AnswerIn,
    approve: bool,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: Caller,
) -> dict[str, Any]:
    with refusals_recorded(request, session, runtime):
        if caller.role != Role.APPROVER:
            raise NotAnApprover(
                "answering a reveal request needs the approver role",
                actor=f"principal:{caller.principal_id}",
                facts={"request": request_id},
            )
        row = answer_reveal(
            session,
            settings=runtime.settings,
            ledger=runtime.ledger,
            approver_id=caller.principal_id,
            request_id=request_id,
            approve=approve,
            customer_id=body.customer_id,
            case=body.case,
            note=body.note,
        )
    session.commit()
    request.app.state.metrics.reveals.labels("approved" if approve else "denied").inc()
    if row.status == "granted":
        request.app.state.metrics.reveals.labels("granted").inc()
    return reveal_view(session, row)


@router.post("/{request_id}/approve")
def approve(
    request_id: Id,
    body: AnswerIn,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: StaffDep,
) -> dict[str, Any]:
    """Approve (approver role; never your own request or one from your reporting line)."""
    return _answer(request_id, body, True, request, session, runtime, caller)


@router.post("/{request_id}/deny")
def deny(
    request_id: Id,
    body: AnswerIn,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: StaffDep,
) -> dict[str, Any]:
    """Deny: one denial closes the request."""
    return _answer(request_id, body, False, request, session, runtime, caller)


@router.post("/{request_id}/view")
def view(
    request_id: Id, request: Request, session: SessionDep, runtime: RuntimeDep, caller: EmployeeDep
) -> JSONResponse:
    """Use one view of your granted reveal: the customer's real address."""
    with refusals_recorded(request, session, runtime):
        shown = view_reveal(
            session,
            ledger=runtime.ledger,
            vault=runtime.vault,
            employee_id=caller.principal_id,
            request_id=request_id,
        )
    session.commit()
    request.app.state.metrics.reveals.labels("viewed").inc()
    return JSONResponse(
        {
            "request_id": shown.request_id,
            "customer_id": shown.customer_id,
            "address": shown.address,
            "views_left": shown.views_left,
            "grant_expires_at": shown.grant_expires_at.isoformat(),
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
