"""Templates: register a version (linted now), list, read, acknowledge warnings.

A template's lint errors block every send of that version; its warnings need a named
person's acknowledgement (admin or approver keys).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Count
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.models import Principal
from mailveil.errors import Forbidden
from mailveil.incidents.notices import SERVICE as NOTICE_OWNER
from mailveil.incidents.notices import ensure_service
from mailveil.notify.models import Template
from mailveil.notify.templates import (
    acknowledge,
    get_template,
    list_templates,
    register_template,
    template_view,
)

router = APIRouter(prefix="/v1/templates", tags=["notifications"])
WriterDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.SERVICE))]
ReaderDep = Annotated[
    Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.SERVICE, Role.APPROVER))
]
PersonDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.APPROVER))]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person: str = Field(min_length=1, max_length=200, description="who accepts the warnings")


def view(session: Session, row: Template) -> dict[str, Any]:
    owner = session.get(Principal, row.owner_id)
    return template_view(row, owner.external_id if owner else None)


@router.post("", status_code=201)
def post_template(
    body: dict[str, Any], session: SessionDep, runtime: RuntimeDep, caller: WriterDep
) -> dict[str, Any]:
    """A new version of the named template; the answer carries its lint findings."""
    if caller.role == Role.SERVICE:
        owner = session.get(Principal, caller.principal_id)
        if owner is None or body.get("owner") != owner.external_id:
            raise Forbidden("a service key registers templates it owns only")
    elif body.get("owner") == NOTICE_OWNER:
        # An operator's own breach notice may come before the first notice round.
        ensure_service(session)
    row = register_template(session, runtime.settings, body, actor=caller.actor)
    session.commit()
    return view(session, row)


@router.get("")
def get_templates(session: SessionDep, caller: ReaderDep) -> dict[str, Any]:
    """The latest version of every template."""
    return {"items": [view(session, row) for row in list_templates(session)]}


@router.get("/{name}")
def get_latest(name: str, session: SessionDep, caller: ReaderDep) -> dict[str, Any]:
    return view(session, get_template(session, name))


@router.get("/{name}/versions/{version}")
def get_version(
    name: str, version: Count, session: SessionDep, caller: ReaderDep
) -> dict[str, Any]:
    return view(session, get_template(session, name, version))


@router.post("/{name}/versions/{version}/acknowledge")
def post_acknowledge(
    name: str, version: Count, body: AckIn, session: SessionDep, caller: PersonDep
) -> dict[str, Any]:
    """A named person accepts the version's warnings (errors cannot be acknowledged)."""
    row = acknowledge(session, name, version, person=body.person)
    session.commit()
    return view(session, row)
