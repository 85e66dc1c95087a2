"""Signals and reports: the triage queue (confirm, dismiss with a reason, merge into an
incident) and every abuse report with its outcome and why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from mailveil.auth.keys import Role
from mailveil.console.sessions import Person
from mailveil.console.web import Actor, DbDep, Viewer, console_of, flash, page, redirect, retry_busy
from mailveil.detect.attribution_graph import strength_of
from mailveil.detect.incidents import incident_view, list_incidents, list_signals
from mailveil.detect.report_list import list_reports
from mailveil.detect.signals import LIVE_STATUSES, signal_view
from mailveil.detect.triage import (
    confirm_signal,
    dismiss_signal,
    merge_signal,
    report_in_words,
    triage_queue,
)

router = APIRouter()
Responder = (Role.ADMIN, Role.INVESTIGATOR)
SeeDep = Annotated[Person, Depends(Viewer(*Responder))]
ActDep = Annotated[Person, Depends(Actor(*Responder))]


@router.get("/signals", response_class=HTMLResponse)
def signals(request: Request, session: DbDep, person: SeeDep, show: str = "queue") -> HTMLResponse:
    rows = triage_queue(session) if show == "queue" else list_signals(session, limit=1000)
    items = []
    for s in rows:
        item = signal_view(s)
        item.update(strength=strength_of(s).to_dict(), triage=s.triage, reason=s.triage_reason)
        items.append(item)
    live = [
        incident_view(session, i)
        for i in list_incidents(session, limit=1000)
        if i.status in LIVE_STATUSES
    ]
    return page(request, session, person, "signals.html", signals=items, show=show, incidents=live)


@router.post("/signals/{signal_id}/confirm")
@retry_busy
def confirm(signal_id: int, request: Request, session: DbDep, person: ActDep) -> Response:
    runtime = console_of(request).runtime
    row = confirm_signal(session, runtime.ledger, signal_id, actor=person.actor)
    session.commit()
    flash(request, f"Signal {signal_id} confirmed (incident {row.incident_id}).")
    return redirect("/console/signals")


@router.post("/signals/{signal_id}/dismiss")
@retry_busy
def dismiss(
    signal_id: int,
    request: Request,
    session: DbDep,
    person: ActDep,
    reason: Annotated[str, Form(min_length=1, max_length=500)],
) -> Response:
    runtime = console_of(request).runtime
    dismiss_signal(session, runtime.ledger, signal_id, reason=reason, actor=person.actor)
    session.commit()
    flash(request, f"Signal {signal_id} dismissed.")
    return redirect("/console/signals")


@router.post("/signals/{signal_id}/merge")
@retry_busy
def merge(
    signal_id: int,
    request: Request,
    session: DbDep,
    person: ActDep,
    incident_id: Annotated[int, Form(ge=1)],
) -> Response:
    runtime = console_of(request).runtime
    merge_signal(
        session,
        runtime.ledger,
        signal_id,
        incident_id=incident_id,
        actor=person.actor,
    )
    session.commit()
    flash(request, f"Signal {signal_id} merged into incident {incident_id}.")
    return redirect("/console/signals")


@router.get("/reports", response_class=HTMLResponse)
def reports(request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    items = [report_in_words(r) for r in list_reports(session, limit=500, newest_first=True)]
    return page(request, session, person, "reports.html", reports=items)


__all__ = ["router"]
