"""The quarantine: held messages with the ledger entry that holds each, one message shown
as inert text (no markup runs, nothing remote loads), release and delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from mailveil.auth.keys import Role
from mailveil.console.sessions import Person
from mailveil.console.web import (
    Actor,
    Console,
    DbDep,
    Viewer,
    console_of,
    flash,
    page,
    redirect,
    retry_busy,
)
from mailveil.errors import Conflict, InvalidInput
from mailveil.relay.context import RelayContext
from mailveil.relay.delivery import DeliveryError
from mailveil.relay.inspect import inert_view
from mailveil.relay.release import delete, held_entry, list_held, release

router = APIRouter(prefix="/quarantine")
Responder = (Role.ADMIN, Role.INVESTIGATOR)
SeeDep = Annotated[Person, Depends(Viewer(*Responder))]
ActDep = Annotated[Person, Depends(Actor(*Responder))]


def _relay(console: Console) -> RelayContext:
    """The relay's keys and policy, loaded once (a release rewrites and signs like the relay)."""
    ctx = console.extra.get("relay")
    if ctx is None:
        ctx = console.extra["relay"] = RelayContext.load(console.runtime)
    assert isinstance(ctx, RelayContext)
    return ctx


@router.get("", response_class=HTMLResponse)
def held(request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    rows = [e.view() for e in list_held(session, console_of(request).runtime.settings)]
    return page(request, session, person, "quarantine.html", held=rows)


@router.get("/{sha256}", response_class=HTMLResponse)
def one(sha256: str, request: Request, session: DbDep, person: SeeDep) -> HTMLResponse:
    settings = console_of(request).runtime.settings
    entry = held_entry(session, settings, sha256)
    return page(
        request,
        session,
        person,
        "held.html",
        entry=entry.view(),
        message=inert_view(settings, entry.held.sha256),
    )


@router.post("/{sha256}/release")
def release_one(sha256: str, request: Request, session: DbDep, person: ActDep) -> Response:
    # Not retried on a busy database: a release commits before it delivers, and a second
    # attempt could deliver twice.
    ctx = _relay(console_of(request))
    try:
        token = release(session, ctx, sha256, actor=person.actor)
    except DeliveryError as exc:
        raise Conflict(
            f"the smarthost did not take it ({exc.reply.code} {exc.reply.enhanced}); "
            "it stays in quarantine"
        ) from exc
    flash(request, f"Released: delivered with the warning banner (relay message {token}).")
    return redirect("/console/quarantine")


@router.post("/{sha256}/delete")
@retry_busy
def delete_one(
    sha256: str,
    request: Request,
    session: DbDep,
    person: ActDep,
    confirm: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    if confirm != "yes":
        raise InvalidInput("tick the confirmation to delete a held message")
    runtime = console_of(request).runtime
    delete(session, runtime.settings, runtime.ledger, sha256, actor=person.actor)
    flash(request, "Deleted; the deletion is in the ledger.")
    return redirect("/console/quarantine")


__all__ = ["router"]
