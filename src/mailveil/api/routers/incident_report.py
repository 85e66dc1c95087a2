"""The regulator report: its data (JSON), the document (HTML, PDF), the exact list of affected
people with their proofs (NDJSON), the officer's assessment, the submissions to authorities
(phased updates) and the notify / do-not-notify decisions; and the controller's details every
report names."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Country, Id, Moment, Version
from mailveil.auth.keys import Caller, Role
from mailveil.detect.incidents import get_incident
from mailveil.incidents import filings
from mailveil.incidents.controller import FIELDS as CONTROLLER_FIELDS
from mailveil.incidents.controller import controller_details, controller_history, set_controller
from mailveil.incidents.proofs import write_affected
from mailveil.incidents.regulator import regulator_report, render_html
from mailveil.incidents.report_actions import decide, submit
from mailveil.incidents.report_pdf import render_pdf

router = APIRouter(tags=["regulator report"])
OfficerDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.INVESTIGATOR))]
Text200 = Annotated[str, Field(max_length=200)]
Text500 = Annotated[str, Field(max_length=500)]
# "" clears a stored address.
Email = Annotated[
    str,
    Field(max_length=320, json_schema_extra={"anyOf": [{"format": "email"}, {"maxLength": 0}]}),
]


class ControllerIn(BaseModel):
    """Only the fields given change; "" clears one."""

    # At least one field to change (a version alone changes nothing: 422 otherwise).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [{"required": [f]} for f in CONTROLLER_FIELDS]},
    )
    name: Text200 | None = None
    address: Text500 | None = None
    establishment_country: Country | Literal[""] | None = None
    dpo_name: Text200 | None = None
    dpo_email: Email | None = None
    dpo_phone: Annotated[str, Field(max_length=40, pattern=r"^[0-9 +\-()./]*$")] | None = None
    representative_name: Text200 | None = None
    representative_address: Text500 | None = None
    representative_email: Email | None = None
    version: Version | None = Field(
        default=None, description="refuse if the stored version differs"
    )


class AssessmentIn(BaseModel):
    """The officer's inputs; only the fields given change. ``severity`` maps ENISA inputs
    (dpc_category, dpc_adjustment, ei, confidentiality, integrity, availability, malicious)
    to a value, or to null to go back to the suggested one."""

    model_config = ConfigDict(extra="forbid")
    reason: Text500 = Field(min_length=1)
    severity: dict[str, str | int | bool | None] | None = None
    breach_from: Moment | None = None
    breach_to: Moment | None = None
    breach_basis: Annotated[str, Field(max_length=2000)] | None = None
    measures_proposed: list[Text500] | None = Field(default=None, max_length=30)
    consequences: list[Text500] | None = Field(default=None, max_length=30)
    nature: Annotated[str, Field(max_length=2000)] | None = None
    version: Version | None = None


class SubmissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    obligation: Annotated[str, Field(max_length=64)] = Field(
        description='a deadline row\'s key, e.g. "EEA:authority" or "US-TX:attorney_general"'
    )
    kind: Literal["initial", "update", "final"]
    submitted_at: Moment | None = Field(default=None, description="default: now")
    reference: Text200 = ""
    note: Annotated[str, Field(max_length=2000)] = ""


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    obligation: Annotated[str, Field(max_length=64)]
    notify: bool
    reason_code: Annotated[str, Field(max_length=64)]
    explanation: Annotated[str, Field(min_length=10, max_length=2000)]


def _report(session: Any, runtime: Any, incident_id: Id) -> dict[str, Any]:
    report = regulator_report(session, runtime.settings, incident_id, ledger=runtime.ledger)
    session.commit()  # the checkpoint the proofs may have needed
    return report


@router.get("/v1/incidents/{incident_id}/report")
def get_report(
    incident_id: Id, session: SessionDep, runtime: RuntimeDep, _caller: OfficerDep
) -> dict[str, Any]:
    """The report's data: controller, when (breach window, awareness with its proof), nature,
    people (exact counts per member state and place), consequences, measures, ENISA severity,
    every recipient's deadline and where it stands, notices, submissions, decisions, history.
    ``draft`` is true until the incident is confirmed and the controller's details are
    complete; ``draft_reasons`` says what is missing."""
    return _report(session, runtime, incident_id)


@router.get("/v1/incidents/{incident_id}/report/html", response_class=HTMLResponse)
def get_report_html(
    incident_id: Id,
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: OfficerDep,
    fragment: bool = False,
) -> HTMLResponse:
    """The report as a document (``fragment=true``: the ``<article>`` alone, to embed)."""
    html = render_html(_report(session, runtime, incident_id), fragment=fragment)
    return HTMLResponse(
        html, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
    )


@router.get(
    "/v1/incidents/{incident_id}/report/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def get_report_pdf(
    incident_id: Id, session: SessionDep, runtime: RuntimeDep, _caller: OfficerDep
) -> Response:
    """The report as PDF (A4; a draft carries DRAFT on every page)."""
    report = await run_in_threadpool(_report, session, runtime, incident_id)
    pdf = await run_in_threadpool(render_pdf, report)
    name = f"breach-report-incident-{incident_id}{'-DRAFT' if report['draft'] else ''}.pdf"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/v1/incidents/{incident_id}/report/affected",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def get_affected(
    incident_id: Id,
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: OfficerDep,
    leaves: Annotated[bool, Query(description="include each entry's leaf text")] = False,
) -> StreamingResponse:
    """The exact list of affected people (ids, never addresses), each with the ledger entries
    that put them in the blast radius and their inclusion proofs; a header names the signed
    checkpoint, a trailer the counts. Check it with `mailveil incidents report
    verify-affected FILE --key <verifier key>`."""
    get_incident(session, incident_id)
    # Spooled (to disk past 8 MiB) so the checkpoint it may sign is committed before the
    # first byte goes out; the stream closes it.
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=8 * 1024 * 1024, mode="w+", encoding="utf-8"
    )
    write_affected(
        session, runtime.settings, runtime.ledger, incident_id, spool, with_leaves=leaves
    )
    session.commit()
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        try:
            while block := spool.read(64 * 1024):
                yield block.encode("utf-8")
        finally:
            spool.close()

    return StreamingResponse(
        chunks(),
        media_type="application/x-ndjson",
        headers={
            "Content-Disposition": f'attachment; filename="affected-incident-{incident_id}.ndjson"'
        },
    )


@router.get("/v1/incidents/{incident_id}/report/assessment")
def get_assessment(incident_id: Id, session: SessionDep, _caller: OfficerDep) -> dict[str, Any]:
    """The officer's inputs as recorded, with their version."""
    get_incident(session, incident_id)
    values, version = filings.assessment_values(session, incident_id)
    return {"incident_id": incident_id, "version": version, "values": values}


@router.patch("/v1/incidents/{incident_id}/report/assessment")
def patch_assessment(
    incident_id: Id,
    body: AssessmentIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: OfficerDep,
) -> dict[str, Any]:
    """Change the officer's inputs (each change a ledger entry with its reason)."""
    changes = body.model_dump(exclude_unset=True, exclude={"reason", "version"})
    for key in ("breach_from", "breach_to"):
        if isinstance(changes.get(key), datetime):
            changes[key] = changes[key].isoformat()
    values, version = filings.assess_incident(
        session,
        ledger=runtime.ledger,
        incident_id=incident_id,
        changes=changes,
        reason=body.reason,
        actor=caller.actor,
        expected_version=body.version,
    )
    session.commit()
    return {"incident_id": incident_id, "version": version, "values": values}


@router.get("/v1/incidents/{incident_id}/report/submissions")
def get_submissions(incident_id: Id, session: SessionDep, _caller: OfficerDep) -> dict[str, Any]:
    """Every submission (Art. 33(4) phases), oldest first, each with what changed."""
    get_incident(session, incident_id)
    return {
        "items": [filings.submission_view(s) for s in filings.submissions(session, incident_id)]
    }


@router.post("/v1/incidents/{incident_id}/report/submissions", status_code=201)
def post_submission(
    incident_id: Id,
    body: SubmissionIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: OfficerDep,
) -> dict[str, Any]:
    """Record that the report, as it stands, went to one recipient (409 while it is a draft;
    the first submission to a recipient is ``initial``, later ones ``update`` or ``final``)."""
    row = submit(
        session,
        settings=runtime.settings,
        ledger=runtime.ledger,
        incident_id=incident_id,
        obligation=body.obligation,
        kind=body.kind,
        actor=caller.actor,
        submitted_at=body.submitted_at,
        reference=body.reference,
        note=body.note,
    )
    session.commit()
    return filings.submission_view(row)


@router.get("/v1/incidents/{incident_id}/report/decisions")
def get_decisions(incident_id: Id, session: SessionDep, _caller: OfficerDep) -> dict[str, Any]:
    """Every notify / do-not-notify decision, oldest first (the newest per recipient holds)."""
    get_incident(session, incident_id)
    return {"items": [filings.decision_view(d) for d in filings.decisions(session, incident_id)]}


@router.post("/v1/incidents/{incident_id}/report/decisions", status_code=201)
def post_decision(
    incident_id: Id,
    body: DecisionIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: OfficerDep,
) -> dict[str, Any]:
    """Record a decision to notify a recipient or not, with a reason code (see the docs)
    and an explanation, in the ledger."""
    row = decide(
        session,
        settings=runtime.settings,
        ledger=runtime.ledger,
        incident_id=incident_id,
        obligation=body.obligation,
        notify=body.notify,
        reason_code=body.reason_code,
        explanation=body.explanation,
        actor=caller.actor,
    )
    session.commit()
    return filings.decision_view(row)


@router.get("/v1/report/controller")
def get_controller(session: SessionDep, runtime: RuntimeDep, _caller: OfficerDep) -> dict[str, Any]:
    """The controller's details every report names, where they come from (settings or the
    stored edits), their version and what is missing."""
    return controller_details(session, runtime.settings).to_dict()


@router.patch("/v1/report/controller")
def patch_controller(
    body: ControllerIn, session: SessionDep, runtime: RuntimeDep, caller: OfficerDep
) -> dict[str, Any]:
    """Change some of the controller's details (validated, stored, in the ledger)."""
    changes = body.model_dump(exclude_unset=True, exclude={"version"})
    details = set_controller(
        session,
        settings=runtime.settings,
        ledger=runtime.ledger,
        changes=changes,
        actor=caller.actor,
        expected_version=body.version,
    )
    session.commit()
    return details.to_dict()


@router.get("/v1/report/controller/history")
def get_controller_history(session: SessionDep, _caller: OfficerDep) -> dict[str, Any]:
    """Every change of the controller's details, newest first, from the ledger."""
    return {"items": controller_history(session)}
