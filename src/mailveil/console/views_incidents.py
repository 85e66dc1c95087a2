"""Incidents: the list with the 72-hour clock; one incident with its attribution graph,
evidence and strength, blast radius, timeline and actions (status, containment and breach
notices, each behind a confirmation); the evidence bundle and the regulator report."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from mailveil.auth.keys import Role
from mailveil.console import charts
from mailveil.console.regulator import REPORTS
from mailveil.console.sessions import Person
from mailveil.console.web import Actor, DbDep, Viewer, console_of, flash, page, redirect, retry_busy
from mailveil.detect.attribution_graph import attribution, strength_of
from mailveil.detect.evidence import build_bundle
from mailveil.detect.incidents import (
    TRANSITIONS,
    get_incident,
    incident_view,
    list_incidents,
    list_signals,
    set_status,
    timeline,
)
from mailveil.detect.signals import signal_view
from mailveil.errors import NotFound
from mailveil.incidents.blast import BlastRadius, blast_radius, culprits_of
from mailveil.incidents.containment import contain
from mailveil.incidents.notices import prepare_notices

router = APIRouter(prefix="/incidents")
Responder = (Role.ADMIN, Role.INVESTIGATOR)
SeeDep = Annotated[Person, Depends(Viewer(*Responder))]
ActDep = Annotated[Person, Depends(Actor(*Responder))]
Reason = Annotated[str, Form(min_length=1, max_length=500)]


@router.get("", response_class=HTMLResponse)
def incidents(request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    rows = [incident_view(session, r) for r in list_incidents(session, limit=1000)]
    rows.sort(key=lambda r: (r["status"] not in ("open", "confirmed"), r["hours_left_to_notify"]))
    for row in rows:
        row["clock"] = charts.clock(row["hours_left_to_notify"])
    return page(request, session, person, "incidents.html", incidents=rows)


def _radius(session: Session, incident_id: int) -> BlastRadius | None:
    sources = culprits_of(session, incident_id)
    return blast_radius(session, sources, sample=0) if sources else None


def _graph(session: Session, incident_id: int) -> tuple[Any, int]:
    found = attribution(session, incident_id)
    nodes: dict[str, charts.Node] = {}
    edges = []
    for link in found.links:
        source = f"principal:{link.source_id}"
        nodes.setdefault(
            source,
            charts.Node(source, found.principals.get(link.source_id or -1, source), 0, "culprit"),
        )
        nodes.setdefault(link.alias, charts.Node(link.alias, link.alias.split("@")[0], 1, "alias"))
        if link.user.startswith("principal:"):
            label = found.principals.get(int(link.user.split(":")[1]), link.user)
            kind = "culprit"
        else:
            label, kind = link.user, "stranger"
        nodes.setdefault("u:" + link.user, charts.Node("u:" + link.user, label, 2, kind))
        edges.append(charts.Edge(source, link.alias, "ledger"))
        edges.append(charts.Edge(link.alias, "u:" + link.user, link.strength))
    drawing = charts.graph(
        list(nodes.values()), edges, f"Attribution of incident {incident_id}"
    ) if nodes else None  # fmt: skip
    return drawing, found.more_aliases


@router.get("/{incident_id}", response_class=HTMLResponse)
def incident(incident_id: int, request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    row = get_incident(session, incident_id)
    view = incident_view(session, row)
    signals = []
    for s in list_signals(session, incident_id=incident_id, limit=1000):
        item = signal_view(s)
        item["strength"] = strength_of(s).to_dict()
        item["triage"] = s.triage
        item["triage_reason"] = s.triage_reason
        signals.append(item)
    radius = _radius(session, incident_id)
    graph, more = _graph(session, incident_id)
    charts_ = {}
    if radius is not None and radius.customers:
        charts_["country"] = charts.bars(
            radius.by_country.most_common(), "Affected customers by country"
        )
        charts_["region"] = charts.bars(
            radius.by_region.most_common(), "Affected customers by region"
        )
    return page(
        request,
        session,
        person,
        "incident.html",
        i=view,
        clock=charts.clock(view["hours_left_to_notify"]),
        signals=signals,
        radius=radius,
        charts=charts_,
        graph=graph,
        more_aliases=more,
        events=timeline(session, incident_id, limit=500),
        next_statuses=sorted(TRANSITIONS[row.status] - {"contained"}),
    )


@router.post("/{incident_id}/status")
@retry_busy
def change_status(
    incident_id: int,
    request: Request,
    session: DbDep,
    person: ActDep,
    status: Annotated[str, Form(max_length=16)],
    reason: Reason,
) -> Response:
    runtime = console_of(request).runtime
    set_status(
        session,
        ledger=runtime.ledger,
        incident_id=incident_id,
        status=status,
        reason=reason,
        actor=person.actor,
    )
    session.commit()
    flash(request, f"Incident {incident_id} is now {status}.")
    return redirect(f"/console/incidents/{incident_id}")


def _confirmation(
    template: str, incident_id: int, request: Request, session: DbDep, person: Person
) -> HTMLResponse:
    """The page that says what an action will do before anyone can take it."""
    view = incident_view(session, get_incident(session, incident_id))
    radius = _radius(session, incident_id)
    return page(request, session, person, template, i=view, radius=radius)


@router.get("/{incident_id}/contain", response_class=HTMLResponse)
def contain_confirm(
    incident_id: int, request: Request, session: DbDep, person: SeeDep
) -> HTMLResponse:
    return _confirmation("confirm_contain.html", incident_id, request, session, person)


@router.post("/{incident_id}/contain")
@retry_busy
def contain_now(
    incident_id: int, request: Request, session: DbDep, person: ActDep, reason: Reason
) -> Response:
    runtime = console_of(request).runtime
    done = contain(
        session,
        ledger=runtime.ledger,
        incident_id=incident_id,
        reason=reason,
        actor=person.actor,
    )
    session.commit()
    if done.status == "awaiting_confirmation":
        flash(
            request,
            "Containment requested: a culprit is named on weak evidence, so another person "
            "must confirm it from the incident's page. Nothing is suspended yet.",
        )
        return redirect(f"/console/incidents/{incident_id}")
    flash(
        request,
        f"Contained: {len(done.suspended)} principals suspended, {done.aliases_revoked} aliases "
        f"and {done.reveals_revoked} reveal grants revoked, {done.sends_cancelled} sends "
        "cancelled.",
    )
    return redirect(f"/console/incidents/{incident_id}")


@router.get("/{incident_id}/notices", response_class=HTMLResponse)
def notices_confirm(
    incident_id: int, request: Request, session: DbDep, person: SeeDep
) -> HTMLResponse:
    return _confirmation("confirm_notices.html", incident_id, request, session, person)


@router.post("/{incident_id}/notices")
@retry_busy
def notices_now(incident_id: int, request: Request, session: DbDep, person: ActDep) -> Response:
    runtime = console_of(request).runtime
    notice = prepare_notices(
        session,
        settings=runtime.settings,
        ledger=runtime.ledger,
        incident_id=incident_id,
        actor=person.actor,
    )
    session.commit()
    if notice.send_id is None:
        flash(request, "Every affected customer has already been told; no new notices.")
        return redirect(f"/console/incidents/{incident_id}")
    flash(
        request,
        f"Breach notices prepared for {notice.new_customers} customers (send "
        f"{notice.send_id}, {(notice.status or '').replace('_', ' ')}). Start it here.",
    )
    return redirect(f"/console/sends/{notice.send_id}")


@router.get("/{incident_id}/evidence.json")
def evidence(incident_id: int, request: Request, session: DbDep, person: SeeDep) -> Response:
    runtime = console_of(request).runtime
    bundle = build_bundle(session, runtime.settings, runtime.ledger, incident_id)
    session.commit()  # the checkpoint it may have signed
    return Response(
        json.dumps(bundle, indent=2, sort_keys=True),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="incident-{incident_id}-evidence.json"'
        },
    )


@router.get("/{incident_id}/report", response_class=HTMLResponse)
def report(incident_id: int, request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    data = REPORTS.build(session, console_of(request).runtime.settings, incident_id)
    return page(
        request,
        session,
        person,
        "report.html",
        incident_id=incident_id,
        report=data,
        downloads=REPORTS.downloads,
    )


@router.get("/{incident_id}/report/{name}")
def report_document(
    incident_id: int, name: str, request: Request, session: DbDep, person: SeeDep
) -> Response:
    wanted = next((d for d in REPORTS.downloads if d.name == name), None)
    if wanted is None:
        raise NotFound(f"the report has no document {name!r}")
    data = REPORTS.build(session, console_of(request).runtime.settings, incident_id)
    return Response(
        REPORTS.document(data, name),
        media_type=wanted.media_type,
        headers={
            # A document of its own: its styles may be inline, but nothing runs or loads.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
            "Content-Disposition": f'inline; filename="incident-{incident_id}-{name}"',
        },
    )


__all__ = ["router"]
