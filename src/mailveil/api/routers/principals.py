"""Principals: sellers, employees and services, with their attributes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mailveil.access.suspension import reinstate_principal, suspend_principal
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.pagination import clamp_limit, next_cursor
from mailveil.api.respond import idempotent
from mailveil.api.types import Cursor, ExternalId, Id, Limit
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.principals import (
    create_principal,
    get_principal,
    list_principals,
    principal_view,
    update_principal,
)

router = APIRouter(prefix="/v1/principals", tags=["principals"])
BackendDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND))]
Kind = Literal["seller", "employee", "service"]


class PrincipalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Kind
    external_id: ExternalId
    display_name: str = Field(default="", max_length=200)
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="seller: sending_addresses, sending_domains; employee: team, role, "
        "region, manager; service: templates",
    )
    status: Literal["active", "suspended"] = "active"


class PrincipalPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, max_length=200)
    attributes: dict[str, Any] | None = None
    status: Literal["active", "suspended"] | None = None


class PrincipalOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    kind: str
    external_id: str
    display_name: str
    status: str
    attributes: dict[str, Any]


class PrincipalPage(BaseModel):
    items: list[PrincipalOut]
    next: str | None


@router.post("", status_code=201, responses={201: {"model": PrincipalOut}})
async def post_principal(
    body: PrincipalIn, request: Request, session: SessionDep, caller: BackendDep
) -> JSONResponse:
    def handler() -> tuple[int, Any]:
        row = create_principal(
            session,
            kind=body.kind,
            external_id=body.external_id,
            display_name=body.display_name,
            attributes=body.attributes,
            status=body.status,
        )
        return 201, principal_view(row)

    return await idempotent(request, session, caller, handler)


@router.get("")
def get_principals(
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: BackendDep,
    kind: Kind | None = None,
    limit: Annotated[Limit | None, Query(ge=1)] = None,
    after: Annotated[Cursor | None, Query(ge=0)] = None,
) -> PrincipalPage:
    size = clamp_limit(limit, runtime.settings.page_size_default, runtime.settings.page_size_max)
    rows = list_principals(session, kind=kind, after_id=after, limit=size + 1)
    return PrincipalPage(
        items=[PrincipalOut(**principal_view(r)) for r in rows[:size]], next=next_cursor(rows, size)
    )


@router.get("/{principal_id}")
def get_one_principal(principal_id: Id, session: SessionDep, _caller: BackendDep) -> PrincipalOut:
    return PrincipalOut(**principal_view(get_principal(session, principal_id)))


@router.patch("/{principal_id}")
def patch_principal(
    principal_id: Id,
    body: PrincipalPatch,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: BackendDep,
) -> PrincipalOut:
    """Change fields. A status change goes through suspend / reinstate, so suspending here
    contains the principal exactly as `POST .../suspend` does."""
    row = update_principal(
        session, principal_id, display_name=body.display_name, attributes=body.attributes
    )
    if body.status is not None and body.status != row.status:
        change = suspend_principal if body.status == "suspended" else reinstate_principal
        change(
            session,
            ledger=runtime.ledger,
            principal_id=principal_id,
            reason=f"status set to {body.status} through the API",
            actor=caller.actor,
        )
    session.commit()
    return PrincipalOut(**principal_view(row))


class StatusChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="why, for the ledger")


class SuspensionOut(BaseModel):
    principal_id: Id
    aliases_revoked: int
    reveals_revoked: int
    ledger_seq: int


@router.post("/{principal_id}/suspend")
def suspend(
    principal_id: Id,
    body: StatusChangeIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: BackendDep,
) -> SuspensionOut:
    """Suspend: revokes every alias disclosed to the principal and every open reveal request
    or grant of it; its keys stop working for anything policy decides."""
    done = suspend_principal(
        session,
        ledger=runtime.ledger,
        principal_id=principal_id,
        reason=body.reason,
        actor=caller.actor,
    )
    session.commit()
    return SuspensionOut(**done.__dict__)


@router.post("/{principal_id}/reinstate")
def reinstate(
    principal_id: Id,
    body: StatusChangeIn,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: BackendDep,
) -> PrincipalOut:
    """Active again. Revoked aliases stay revoked (disclose anew, deliberately)."""
    reinstate_principal(
        session,
        ledger=runtime.ledger,
        principal_id=principal_id,
        reason=body.reason,
        actor=caller.actor,
    )
    session.commit()
    return PrincipalOut(**principal_view(get_principal(session, principal_id)))
