"""Incident response: blast radius (also as a dry run for any principals), containment and
breach notices. The regulator report has its own router (``incident_report``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Id, Moment
from mailveil.auth.keys import Caller, Role
from mailveil.detect.incidents import get_incident
from mailveil.errors import InvalidInput
from mailveil.incidents.blast import blast_radius, culprits_of
from mailveil.incidents.containment import contain
from mailveil.incidents.notices import prepare_notices

router = APIRouter(tags=["incident response"])
ResponderDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.INVESTIGATOR))]


class ContainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


@router.get("/v1/incidents/{incident_id}/blast-radius")
def get_blast_radius(
    incident_id: Id,
    session: SessionDep,
    _caller: ResponderDep,
    since: Moment | None = None,
    until: Moment | None = None,
    sample: Annotated[int, Query(ge=0, le=1000)] = 20,
) -> dict[str, Any]:
    """Every customer whose alias or real address the incident's source principals held in
    the window: counts by exposure, country and region, and a sample."""
    get_incident(session, incident_id)
    sources = culprits_of(session, incident_id)
    if not sources:
        raise InvalidInput(f"incident {incident_id} names no source principal")
    radius = blast_radius(session, sources, since=since, until=until, sample=sample)
    return {"incident_id": incident_id, **radius.to_dict()}


@router.get("/v1/blast-radius")
def get_dry_run(
    session: SessionDep,
    _caller: ResponderDep,
    principal_id: Annotated[list[Id], Query(min_length=1, max_length=100)],
    since: Moment | None = None,
    until: Moment | None = None,
    sample: Annotated[int, Query(ge=0, le=1000)] = 20,
) -> dict[str, Any]:
    """The same computation for any principals, before an incident is confirmed."""
    return blast_radius(session, principal_id, since=since, until=until, sample=sample).to_dict()


@router.post(
    "/v1/incidents/{incident_id}/contain",
    responses={
        202: {"description": "a culprit rests on weak evidence: a second person must confirm"},
        409: {"description": "not open or confirmed, or the requester confirming themselves"},
    },
)
def post_contain(
    incident_id: Id,
    body: ContainIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ResponderDep,
) -> JSONResponse:
    """Suspend every culprit, revoke their aliases, reveals and in-flight sends.

    Each culprit is listed with the strength of the evidence that named it. If any was
    named only by statistics or by weak evidence, the first call records a request
    (`202`, `status: awaiting_confirmation`) and a second person's call confirms it (`200`,
    `status: contained`)."""
    done = contain(
        session,
        ledger=runtime.ledger,
        incident_id=incident_id,
        reason=body.reason,
        actor=caller.actor,
    )
    session.commit()
    return JSONResponse(done.to_dict(), status_code=202 if done.status != "contained" else 200)


@router.post("/v1/incidents/{incident_id}/notices", status_code=201)
def post_notices(
    incident_id: Id, session: SessionDep, runtime: RuntimeDep, caller: ResponderDep
) -> dict[str, Any]:
    """Prepare the breach notices of a confirmed incident: a membership fact per affected
    customer not yet told, and a send of the (lint-checked) notice template to them. Approve
    and start it under /v1/sends like any send."""
    notice = prepare_notices(
        session,
        settings=runtime.settings,
        ledger=runtime.ledger,
        incident_id=incident_id,
        actor=caller.actor,
    )
    session.commit()
    return notice.to_dict()
