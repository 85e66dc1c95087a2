"""Sends: preview (dry run), create, approve (a second person), start, kill, status, correct;
and suppressions.

``POST /v1/sends?preview=true`` stores and sends nothing. A created send waits in
``awaiting_approval`` when the blast-radius guard holds it; approval is by an admin or an
approver who is not the send's creator. ``start`` hands it to a worker (in this process, or a
Dramatiq queue when ``notify_broker_url`` is set); ``kill`` stops it before its next group.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.api.bulk import is_ndjson, spool
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Count, ExternalId, Id
from mailveil.auth.keys import Caller, Role
from mailveil.contacts import validation as v
from mailveil.contacts.customers import get_customer_by_external_id
from mailveil.db.base import utcnow
from mailveil.errors import Forbidden, InvalidInput
from mailveil.notify.audience import Entry, parse_audience, parse_entry, query_entries
from mailveil.notify.feedback import record_unsubscribe
from mailveil.notify.models import Suppression, Template
from mailveil.notify.queue import Dispatcher
from mailveil.notify.sends import (
    approve,
    check_startable,
    correction,
    create_send,
    get_send,
    kill,
    preview,
    send_view,
)
from mailveil.notify.templates import get_template

router = APIRouter(prefix="/v1/sends", tags=["notifications"])
suppressions = APIRouter(prefix="/v1/suppressions", tags=["notifications"])
# RFC 8058 one-click unsubscribe: no API key (the link's token is the credential), served at
# https://<relay domain>/unsubscribe/<token>.
unsubscribe = APIRouter(prefix="/unsubscribe", tags=["notifications"])
UNSUBSCRIBE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Unsubscribe</title></head><body><h1>Unsubscribe</h1>
<p>Stop receiving messages like this one?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form></body></html>"""
SenderDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.SERVICE))]
PersonDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.APPROVER))]
ReaderDep = Annotated[
    Caller,
    Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.SERVICE, Role.APPROVER, Role.INVESTIGATOR)),
]
SCOPE_PREFIXES = ("category:", "tag:", "list:")


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(max_length=64)
    version: Count | None = None
    audience: dict[str, Any]


class CorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(max_length=64)
    version: Count | None = None
    include_unconfirmed: bool = Field(
        default=False,
        description="also the original's unconfirmed recipients (an operator's decision: "
        "admin keys only)",
    )


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    despite_forecast: bool = Field(
        default=False,
        description="approve although the send's forecast says its first stage would halt "
        "(without it, such an approval is refused with the forecast: 409 send-would-halt)",
    )


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: str = Field(
        max_length=80,
        pattern=r"^(global|(category|tag|list):[a-z0-9][a-z0-9_.-]{0,63})$",
        description="global, category:<c>, tag:<t> or list:<name>",
    )
    customer: ExternalId = Field(description="the customer's external id")


def _owned(caller: Caller, template: Template) -> None:
    if caller.role == Role.SERVICE and caller.principal_id != template.owner_id:
        raise Forbidden("a service key sends only the templates it owns")


def dispatcher(request: Request) -> Dispatcher:
    """The app's dispatcher, built with it (``create_app``) and closed at its shutdown."""
    found: Dispatcher = request.app.state.notify_dispatcher
    return found


@router.post("", status_code=201)
def post_send(
    body: SendIn,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: SenderDep,
    is_preview: Annotated[bool, Query(alias="preview")] = False,
) -> dict[str, Any]:
    """Create a send (or, with ``?preview=true``, a dry run that stores nothing)."""
    template = get_template(session, body.template, body.version)
    _owned(caller, template)
    audience = parse_audience(body.audience)
    # A segment is read a page (notify_batch_size) at a time as create_send stores each
    # batch, never held whole: it can be every customer with a fact of that kind.
    entries = (
        audience
        if isinstance(audience, list)
        else query_entries(session, audience, runtime.settings.notify_batch_size)
    )
    if is_preview:
        response.status_code = 200  # a dry run creates nothing
        source = "list" if isinstance(audience, list) else "segment"
        return preview(session, runtime.settings, template, entries, source=source)
    send = create_send(
        session,
        runtime.settings,
        runtime.ledger,
        template=template,
        entries=entries,
        actor=caller.actor,
    )
    session.commit()
    return send_view(session, send)


@router.post("/ndjson", status_code=201)
async def post_send_ndjson(
    request: Request,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: SenderDep,
    template: Annotated[str, Query(max_length=64)],
    version: Annotated[int | None, Query(ge=1)] = None,
    is_preview: Annotated[bool, Query(alias="preview")] = False,
) -> dict[str, Any]:
    """A send (or a preview) whose audience is uploaded as NDJSON (``application/x-ndjson``,
    one ``{"customer", "facts"?, "language"?}`` a line): for explicit lists too large for a
    JSON body. The body is spooled to disk and read line by line; a bad line is a 422
    naming its line number."""
    if not is_ndjson(request):
        raise InvalidInput("send the audience as application/x-ndjson, one entry a line")
    body = await spool(request)

    def entries() -> Iterator[Entry]:
        for number, line in enumerate(body.lines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"line {number}: not JSON") from exc
            yield parse_entry(raw, f"line {number}")

    def work() -> dict[str, Any]:
        row = get_template(session, template, version)
        _owned(caller, row)
        if is_preview:
            return preview(session, runtime.settings, row, entries(), source="ndjson")
        send = create_send(session, runtime.settings, runtime.ledger, template=row,
                           entries=entries(), actor=caller.actor)  # fmt: skip
        session.commit()
        return send_view(session, send)

    try:
        out = await run_in_threadpool(work)
    finally:
        body.close()
    if is_preview:
        response.status_code = 200
    return out


@router.get("/{send_id:int}")
def get_one(send_id: Id, session: SessionDep, caller: ReaderDep) -> dict[str, Any]:
    return send_view(session, get_send(session, send_id))


@router.post("/{send_id:int}/approve")
def post_approve(
    send_id: Id,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: PersonDep,
    body: ApproveIn | None = None,
) -> dict[str, Any]:
    """The second person's approval of a send the blast-radius guard holds. Read the send
    first (`targeting`, `forecast`): a send whose first stage would halt is approved only
    with `{"despite_forecast": true}`."""
    send = approve(session, runtime.ledger, send_id, actor=caller.actor,
                   despite_forecast=bool(body and body.despite_forecast))  # fmt: skip
    session.commit()
    return send_view(session, send)


@router.post("/{send_id:int}/start", status_code=202)
def post_start(
    send_id: Id, request: Request, session: SessionDep, runtime: RuntimeDep, caller: SenderDep
) -> dict[str, Any]:
    send = check_startable(session, send_id)
    template = session.get(Template, send.template_id)
    assert template is not None
    _owned(caller, template)
    session.commit()
    state = dispatcher(request).start(send_id)
    return {**send_view(session, send), "worker": state}


@router.post("/{send_id:int}/kill")
def post_kill(
    send_id: Id, session: SessionDep, runtime: RuntimeDep, caller: ReaderDep
) -> dict[str, Any]:
    """The kill switch: the worker stops before its next group of recipients."""
    send = kill(session, runtime.ledger, send_id, actor=caller.actor)
    session.commit()
    return send_view(session, send)


@router.post("/{send_id:int}/correction", status_code=201)
def post_correction(
    send_id: Id, body: CorrectionIn, session: SessionDep, runtime: RuntimeDep, caller: SenderDep
) -> dict[str, Any]:
    """A send of the given template to exactly the customers the ledger records as having
    received send ``send_id``."""
    _owned(caller, get_template(session, body.template, body.version))
    if body.include_unconfirmed and caller.role != Role.ADMIN:
        raise Forbidden("including unconfirmed recipients is an operator's decision (admin key)")
    send = correction(
        session,
        runtime.settings,
        runtime.ledger,
        original_id=send_id,
        template_name=body.template,
        version=body.version,
        actor=caller.actor,
        include_unconfirmed=body.include_unconfirmed,
    )
    session.commit()
    return send_view(session, send)


@unsubscribe.get("/{token}", response_class=HTMLResponse)
def get_unsubscribe(token: Annotated[str, Path(max_length=64)]) -> HTMLResponse:
    """A page with a button: a GET never unsubscribes (link scanners follow links)."""
    return HTMLResponse(UNSUBSCRIBE_PAGE, headers={"Cache-Control": "no-store"})


@unsubscribe.post("/{token}")
def post_unsubscribe(
    token: Annotated[str, Path(max_length=64)], session: SessionDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """The one-click POST (body ``List-Unsubscribe=One-Click``) a mailbox provider sends, or
    the page's button: the customer is suppressed for the template's list (or category) and
    the send's unsubscribe gate counts it. Repeating it changes nothing."""
    done = record_unsubscribe(session, runtime.settings, runtime.ledger, token)
    session.commit()
    return {"unsubscribed": True, "scope": done["scope"]}


def _scope(value: str) -> str:
    if value == "global":
        return value
    prefix = next((p for p in SCOPE_PREFIXES if value.startswith(p)), None)
    if prefix is None:
        raise InvalidInput("scope must be global, category:<c>, tag:<t> or list:<name>")
    return prefix + v.slug(value[len(prefix) :], "scope name")


@suppressions.post("", status_code=201)
def post_suppression(body: SuppressionIn, session: SessionDep, caller: SenderDep) -> dict[str, Any]:
    scope = _scope(body.scope)
    customer = get_customer_by_external_id(session, body.customer)
    if not _exists(session, scope, customer.id):
        session.add(Suppression(scope=scope, customer_id=customer.id, created_at=utcnow()))
        session.commit()
    return {"scope": scope, "customer": body.customer}


def _exists(session: Session, scope: str, customer_id: Id) -> bool:
    return (
        session.scalar(
            select(Suppression.id).where(
                Suppression.scope == scope, Suppression.customer_id == customer_id
            )
        )
        is not None
    )
