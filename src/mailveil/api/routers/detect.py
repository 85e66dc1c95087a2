"""Detection: signals, incidents (status, timeline, evidence bundles), abuse-report uploads,
canaries and the detection run."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from mailveil.access.canaries import canaries_of, plant
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Country, Cursor, Id, Limit, Moment
from mailveil.auth.keys import Caller, Role
from mailveil.contacts import validation as v
from mailveil.contacts.principals import get_principal
from mailveil.detect.evidence import build_bundle
from mailveil.detect.incidents import (
    get_incident,
    incident_view,
    list_incidents,
    list_signals,
    set_status,
    timeline,
)
from mailveil.detect.jobs import run_detection
from mailveil.detect.report_list import get_report, list_reports, report_view
from mailveil.detect.reports import ReportOutcomeName, submit_report
from mailveil.detect.signals import signal_view
from mailveil.detect.strength import describe
from mailveil.errors import InvalidInput

router = APIRouter(tags=["detection"])
InvestigatorDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.INVESTIGATOR))]
ReporterDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND))]
IncidentStatus = Literal["open", "confirmed", "contained", "closed", "dismissed"]


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: IncidentStatus
    reason: str = Field(min_length=1, max_length=500)


class CanariesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principal_id: Id
    country: Country
    count: int = Field(default=2, ge=1, le=100)


@router.get("/v1/signals")
def get_signals(
    session: SessionDep,
    _caller: InvestigatorDep,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    incident_id: Annotated[Id | None, Query(ge=1)] = None,
    after: Annotated[Cursor | None, Query(ge=0)] = None,
    limit: Annotated[Limit, Query()] = 100,
) -> dict[str, Any]:
    rows = list_signals(session, kind=kind, incident_id=incident_id, after_id=after, limit=limit)
    return {
        "items": [signal_view(s) for s in rows],
        "next": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/v1/incidents")
def get_incidents(
    session: SessionDep,
    _caller: InvestigatorDep,
    status: Annotated[IncidentStatus | None, Query()] = None,
    after: Annotated[Cursor | None, Query(ge=0)] = None,
    limit: Annotated[Limit, Query()] = 100,
) -> dict[str, Any]:
    rows = list_incidents(session, status=status, after_id=after, limit=limit)
    return {
        "items": [incident_view(session, r) for r in rows],
        "next": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/v1/incidents/{incident_id}")
def get_one_incident(
    incident_id: Id, session: SessionDep, _caller: InvestigatorDep
) -> dict[str, Any]:
    """The incident with its culprits, its signals and the 72-hour clock from detection."""
    return incident_view(session, get_incident(session, incident_id), with_signals=True)


@router.post("/v1/incidents/{incident_id}/status")
def post_status(
    incident_id: Id,
    body: StatusIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: InvestigatorDep,
) -> dict[str, Any]:
    row = set_status(
        session,
        ledger=runtime.ledger,
        incident_id=incident_id,
        status=body.status,
        reason=body.reason,
        actor=caller.actor,
    )
    session.commit()
    return incident_view(session, row)


@router.get("/v1/incidents/{incident_id}/timeline")
def get_timeline(incident_id: Id, session: SessionDep, _caller: InvestigatorDep) -> dict[str, Any]:
    return {"items": timeline(session, incident_id)}


@router.get("/v1/incidents/{incident_id}/evidence")
def get_evidence(
    incident_id: Id, session: SessionDep, runtime: RuntimeDep, _caller: InvestigatorDep
) -> dict[str, Any]:
    """The evidence bundle: ledger entries with inclusion proofs and a signed checkpoint,
    checkable without the database (`mailveil incidents verify FILE`)."""
    bundle = build_bundle(session, runtime.settings, runtime.ledger, incident_id)
    session.commit()  # the checkpoint it may have signed
    return bundle


@router.post(
    "/v1/reports",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "message/rfc822": {
                    "schema": {"type": "string", "minLength": 1, "description": "the raw message"}
                }
            },
        }
    },
)
async def post_report(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: ReporterDep,
    customer_id: Annotated[Id, Query(description="the reporting customer (signed in)")],
) -> dict[str, Any]:
    """Upload the message a customer reports (`message/rfc822`, the raw bytes), on behalf of
    the signed-in customer. The answer only acknowledges receipt; it never says what was
    found."""
    raw = await request.body()
    if not raw:
        raise InvalidInput("send the reported message as the request body (message/rfc822)")

    def run() -> dict[str, Any]:
        outcome = submit_report(
            session,
            settings=runtime.settings,
            ledger=runtime.ledger,
            vault=runtime.vault,
            raw=raw,
            channel="api",
            reporter_customer_id=customer_id,
        )
        session.commit()
        return outcome.to_dict()

    return await run_in_threadpool(run)


@router.get("/v1/reports")
def get_reports(
    session: SessionDep,
    _caller: InvestigatorDep,
    outcome: Annotated[ReportOutcomeName | None, Query()] = None,
    verified: Annotated[bool | None, Query()] = None,
    channel: Annotated[Literal["api", "mailbox"] | None, Query()] = None,
    customer_id: Annotated[Id | None, Query(ge=1, description="the reporting customer")] = None,
    since: Annotated[Moment | None, Query(description="received at or after")] = None,
    after: Annotated[
        Cursor | None, Query(ge=0, description="the `next` of the previous page")
    ] = None,
    limit: Annotated[Limit, Query()] = 100,
) -> dict[str, Any]:
    """Abuse reports, oldest first, each with its outcome and the reason for it (why it
    did or did not count: unverified reporter, pending DNS, a complaint about relayed mail,
    an alias the relay has no record of...). Never shows a real address."""
    rows = list_reports(
        session,
        outcome=outcome,
        verified=verified,
        channel=channel,
        reporter_customer_id=customer_id,
        since=since,
        after_id=after,
        limit=limit,
    )
    return {
        "items": [report_view(r) for r in rows],
        "next": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/v1/reports/{report_id}")
def get_one_report(report_id: Id, session: SessionDep, _caller: InvestigatorDep) -> dict[str, Any]:
    return report_view(get_report(session, report_id))


@router.get("/v1/evidence/strengths")
def get_strengths(_caller: InvestigatorDep) -> dict[str, Any]:
    """The evidence-strength model every signal, culprit and bundle uses: strengths (strongest
    first), which of them can name a culprit, and every basis with its strength and meaning."""
    return describe()


@router.post("/v1/detect/run")
def post_run(
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: InvestigatorDep,
    anomalies: Annotated[bool, Query(description="also score the last week of access")] = False,
) -> dict[str, Any]:
    """Run the detection job now: the ledger scan, and on request the access-anomaly job."""
    result = run_detection(
        session, runtime.settings, runtime.ledger, anomalies=anomalies, metrics=runtime.metrics
    )
    session.commit()
    return result.to_dict()


@router.post("/v1/canaries", status_code=201)
def post_canaries(
    body: CanariesIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: Annotated[Caller, Depends(RoleGate(Role.ADMIN))],
) -> dict[str, Any]:
    """Plant canaries for a principal (their ids are returned to the admin only)."""
    principal = get_principal(session, body.principal_id)
    made = plant(
        session,
        settings=runtime.settings,
        vault=runtime.vault,
        ledger=runtime.ledger,
        principal_id=principal.id,
        country=v.country(body.country),
        count=body.count,
        actor=caller.actor,
    )
    session.commit()
    return {"principal_id": principal.id, "planted": [c.id for c in made]}


@router.get("/v1/canaries")
def get_canaries(
    session: SessionDep,
    _caller: Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.INVESTIGATOR))],
    principal_id: Annotated[Id, Query()],
) -> dict[str, Any]:
    rows = canaries_of(session, principal_id)
    return {
        "items": [
            {"customer_id": c.id, "external_id": c.external_id, "country": c.country} for c in rows
        ]
    }
