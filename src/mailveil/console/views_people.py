"""Employees: each one's daily access volume against their peers, and the anomaly alerts
with their reasons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from mailveil.access.volume import daily_volume
from mailveil.auth.keys import Role
from mailveil.console import charts
from mailveil.console.sessions import Person
from mailveil.console.web import DbDep, Viewer, page
from mailveil.detect.incidents import list_signals
from mailveil.detect.signals import signal_view

router = APIRouter()
SeeDep = Annotated[Person, Depends(Viewer(Role.ADMIN, Role.INVESTIGATOR))]


@router.get("/employees", response_class=HTMLResponse)
def employees(request: Request, session: DbDep, person: SeeDep, days: int = 14) -> HTMLResponse:
    days = min(max(days, 1), 90)
    rows = daily_volume(session, days=days)
    drawn = [
        (
            e,
            charts.volume(
                e.days, e.rows, e.peers, f"{e.name}: customers per day against the team's median"
            ),
        )
        for e in rows
    ]
    alerts = [signal_view(s) for s in list_signals(session, kind="access_anomaly", limit=1000)] + [
        signal_view(s) for s in list_signals(session, kind="access_refusals", limit=1000)
    ]
    alerts.sort(key=lambda a: a["created_at"], reverse=True)
    names = {e.principal_id: e.name for e in rows}
    return page(
        request,
        session,
        person,
        "employees.html",
        employees=drawn,
        alerts=alerts,
        names=names,
        days=days,
    )


__all__ = ["router"]
