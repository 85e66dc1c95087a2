"""Reveals: the approval queue with each request's justification, case and the requester's
recent history; approve or deny with a reason. Employees ask for a reveal and, once it is
granted, see the address: the only page that ever shows a real address, to its grantee."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from mailveil.access.refusals import AccessRefused, record_refusal
from mailveil.access.reveals import (
    answer_reveal,
    get_reveal,
    list_reveals,
    recent_of_requester,
    request_reveal,
    reveal_view,
    view_reveal,
)
from mailveil.auth.keys import Role
from mailveil.console.sessions import Person
from mailveil.console.web import Actor, DbDep, Viewer, console_of, flash, page, redirect, retry_busy
from mailveil.contacts.principals import get_principal
from mailveil.errors import Forbidden
from mailveil.runtime import Runtime

router = APIRouter(prefix="/reveals")
Everyone = (Role.ADMIN, Role.INVESTIGATOR, Role.APPROVER, Role.EMPLOYEE)
SeeDep = Annotated[Person, Depends(Viewer(*Everyone))]
AnswerDep = Annotated[Person, Depends(Actor(Role.APPROVER))]
EmployeeDep = Annotated[Person, Depends(Actor(Role.EMPLOYEE))]


@contextmanager
def _refusals_recorded(session: Session, runtime: Runtime) -> Iterator[None]:
    """A refusal is written to the ledger before the person is told (as the API does)."""
    try:
        yield
    except AccessRefused as exc:
        record_refusal(session, runtime.ledger, exc)
        raise


def _only_own(person: Person) -> int | None:
    """Employees see their own requests only; approvers and responders see all."""
    if person.has(Role.ADMIN, Role.INVESTIGATOR, Role.APPROVER):
        return None
    return person.principal_id if person.principal_id is not None else -1


@router.get("", response_class=HTMLResponse)
def queue(
    request: Request, session: DbDep, person: SeeDep, status: str = "pending"
) -> HTMLResponse:
    rows = list_reveals(
        session,
        status=None if status == "all" else status,
        requester_id=_only_own(person),
        limit=500,
    )
    items = []
    for row in rows:
        item = reveal_view(session, row)
        item["requester"] = get_principal(session, row.requester_id).display_name
        items.append(item)
    return page(request, session, person, "reveals.html", reveals=items, shown_status=status)


@router.get("/{request_id}", response_class=HTMLResponse)
def one(request_id: int, request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    row = get_reveal(session, request_id)
    own = _only_own(person)
    if own is not None and row.requester_id != own:
        raise Forbidden("an employee sees only their own reveal requests")
    requester = get_principal(session, row.requester_id)
    history = [
        reveal_view(session, r)
        for r in recent_of_requester(session, row.requester_id, limit=11)
        if r.id != row.id
    ][:10]
    return page(
        request,
        session,
        person,
        "reveal.html",
        r=reveal_view(session, row),
        requester=requester,
        history=history,
        mine=person.principal_id == row.requester_id,
    )


def _answer(
    request_id: int, approve: bool, request: Request, session: Session, person: Person, note: str
) -> Response:
    runtime = console_of(request).runtime
    row = get_reveal(session, request_id)
    customer_id, case = row.customer_id, reveal_view(session, row)["case"]
    session.rollback()  # the answer locks the request on a fresh snapshot
    with _refusals_recorded(session, runtime):
        answered = answer_reveal(
            session,
            settings=runtime.settings,
            ledger=runtime.ledger,
            approver_id=person.principal_id,
            request_id=request_id,
            approve=approve,
            customer_id=customer_id,
            case=case,
            note=note,
        )
    session.commit()
    flash(request, f"Reveal request {request_id} is {answered.status}.")
    return redirect(f"/console/reveals/{request_id}")


Note = Annotated[str, Form(min_length=1, max_length=500)]


@router.post("/{request_id}/approve")
@retry_busy
def approve(
    request_id: int, request: Request, session: DbDep, person: AnswerDep, note: Note
) -> Response:
    return _answer(request_id, True, request, session, person, note)


@router.post("/{request_id}/deny")
@retry_busy
def deny(
    request_id: int, request: Request, session: DbDep, person: AnswerDep, note: Note
) -> Response:
    return _answer(request_id, False, request, session, person, note)


@router.post("")
@retry_busy
def ask(
    request: Request,
    session: DbDep,
    person: EmployeeDep,
    customer_id: Annotated[int, Form(ge=1)],
    case: Annotated[str, Form(min_length=1, max_length=255)],
    justification: Annotated[str, Form(max_length=1000)],
) -> Response:
    runtime = console_of(request).runtime
    with _refusals_recorded(session, runtime):
        row = request_reveal(
            session,
            settings=runtime.settings,
            policy=runtime.policy,
            ledger=runtime.ledger,
            employee_id=person.principal_id,
            customer_id=customer_id,
            case=case,
            justification=justification,
        )
    session.commit()
    flash(request, f"Reveal request {row.id} sent for approval.")
    return redirect(f"/console/reveals/{row.id}")


@router.post("/{request_id}/view", response_class=HTMLResponse)
@retry_busy
def view(request_id: int, request: Request, session: DbDep, person: EmployeeDep) -> HTMLResponse:
    """One view of the person's own granted reveal (the response is never cached)."""
    runtime = console_of(request).runtime
    with _refusals_recorded(session, runtime):
        shown = view_reveal(
            session,
            ledger=runtime.ledger,
            vault=runtime.vault,
            employee_id=person.principal_id,
            request_id=request_id,
        )
    session.commit()
    return page(request, session, person, "revealed.html", shown=shown, keep_address=shown.address)


__all__ = ["router"]
