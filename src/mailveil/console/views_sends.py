"""Sends: each send's stages as a progress view with the gates' measures against their
thresholds, the audience with its eligibility evidence, approval (warned when the stored
assessment says the send would halt), start, and the kill switch.

Every action names the status the page showed; a page left open while the send moved on
(finished, halted, killed) is refused with what happened, never acted on blindly."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from mailveil.auth.keys import Role
from mailveil.console import charts
from mailveil.console.sessions import Person
from mailveil.console.web import Actor, DbDep, Viewer, console_of, flash, page, redirect, retry_busy
from mailveil.errors import Conflict, Forbidden
from mailveil.incidents.notices import is_notice_send
from mailveil.notify.progress import (
    GATES,
    forecast_of,
    list_sends,
    recipient_sample,
    stage_progress,
)
from mailveil.notify.queue import Dispatcher
from mailveil.notify.sends import approve, check_startable, get_send, kill, send_view

router = APIRouter(prefix="/sends")
Readers = (Role.ADMIN, Role.INVESTIGATOR, Role.APPROVER)
SeeDep = Annotated[Person, Depends(Viewer(*Readers))]
KillDep = Annotated[Person, Depends(Actor(*Readers))]
ApproveDep = Annotated[Person, Depends(Actor(Role.ADMIN, Role.APPROVER))]
StartDep = Annotated[Person, Depends(Actor(Role.ADMIN, Role.INVESTIGATOR))]
Seen = Annotated[str, Form(max_length=24)]


@router.get("", response_class=HTMLResponse)
def sends(request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    rows = [send_view(session, s) for s in list_sends(session)]
    return page(request, session, person, "sends.html", sends=rows)


@router.get("/{send_id}", response_class=HTMLResponse)
def one(send_id: int, request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    send = get_send(session, send_id)
    view = send_view(session, send)
    stages = stage_progress(session, send)
    names = [f"{s.fraction * 100:g} %" for s in stages]
    chart = charts.gates(
        [
            charts.GateRow(
                g,
                float(send.thresholds.get(g, 1.0)),
                tuple(s.rates.get(g) if s.rates else None for s in stages),
            )
            for g in GATES
        ],
        names,
        f"Gate measures of send {send_id} by stage, against their thresholds",
    )
    return page(
        request,
        session,
        person,
        "send.html",
        s=view,
        stages=stages,
        gates=GATES,
        chart=chart,
        forecast=forecast_of(session, send),
        eligible=recipient_sample(session, send_id, state="pending", limit=10)
        + recipient_sample(session, send_id, state="delivered", limit=10),
        refused=recipient_sample(session, send_id, state="ineligible", limit=10),
        can_start=person.has(Role.ADMIN)
        or (person.has(Role.INVESTIGATOR) and is_notice_send(session, send)),
    )


def _unchanged(request: Request, session: DbDep, send_id: int, seen: str) -> None:
    send = get_send(session, send_id)
    if send.status != seen:
        raise Conflict(
            f"send {send_id} is {send.status.replace('_', ' ')} now (the page showed "
            f"{seen.replace('_', ' ')}); nothing was done. Reload the page."
        )
    session.rollback()  # the action starts on a fresh snapshot


@router.post("/{send_id}/kill")
@retry_busy
def kill_send(
    send_id: int, request: Request, session: DbDep, person: KillDep, seen_status: Seen
) -> Response:
    _unchanged(request, session, send_id, seen_status)
    runtime = console_of(request).runtime
    send = kill(session, runtime.ledger, send_id, actor=person.actor)
    session.commit()
    flash(
        request,
        f"Send {send_id} killed at stage {send.stage + 1}: the worker stops before its next group.",
    )
    return redirect(f"/console/sends/{send_id}")


@router.post("/{send_id}/approve")
@retry_busy
def approve_send(
    send_id: int, request: Request, session: DbDep, person: ApproveDep, seen_status: Seen
) -> Response:
    _unchanged(request, session, send_id, seen_status)
    runtime = console_of(request).runtime
    # The page showed the forecast (and its button says "despite the warning") before this.
    approve(session, runtime.ledger, send_id, actor=person.actor,
            despite_forecast=True)  # fmt: skip
    session.commit()
    flash(request, f"Send {send_id} approved; it can start.")
    return redirect(f"/console/sends/{send_id}")


def _dispatcher(request: Request) -> Dispatcher:
    """The hosting app's dispatcher (one per process, shared with the API, built and closed
    with it by ``create_app``)."""
    found: Dispatcher = console_of(request).host_state.notify_dispatcher
    return found


@router.post("/{send_id}/start")
@retry_busy
def start_send(
    send_id: int, request: Request, session: DbDep, person: StartDep, seen_status: Seen
) -> Response:
    _unchanged(request, session, send_id, seen_status)
    send = check_startable(session, send_id)
    if not person.has(Role.ADMIN) and not is_notice_send(session, send):
        raise Forbidden("investigators start breach notices; other sends are an admin's")
    session.commit()
    state = _dispatcher(request).start(send_id)
    flash(request, f"Send {send_id} {state}.")
    return redirect(f"/console/sends/{send_id}")


__all__ = ["router"]
