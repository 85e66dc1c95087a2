"""API keys: admins issue and revoke them; the token is shown once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mailveil.api.deps import RoleGate, SessionDep
from mailveil.api.respond import idempotent
from mailveil.api.types import Id
from mailveil.auth.keys import Caller, Role, issue_key, list_keys, revoke_key
from mailveil.auth.models import ApiKey
from mailveil.contacts.principals import get_principal

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])
AdminDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN))]


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    principal_id: Id | None = None
    label: str = Field(default="", max_length=200)


class ApiKeyOut(BaseModel):
    key_id: str
    role: str
    principal_id: Id | None
    label: str
    created_at: str
    revoked: bool


def _out(row: ApiKey) -> dict[str, Any]:
    return ApiKeyOut(
        key_id=row.key_id,
        role=row.role,
        principal_id=row.principal_id,
        label=row.label,
        created_at=row.created_at.isoformat(),
        revoked=row.revoked_at is not None,
    ).model_dump()


@router.post("", status_code=201, responses={201: {"model": ApiKeyOut}})
async def create_api_key(
    body: ApiKeyIn, request: Request, session: SessionDep, caller: AdminDep
) -> JSONResponse:
    def handler() -> tuple[int, Any]:
        kind = None
        if body.principal_id is not None:
            kind = get_principal(session, body.principal_id).kind
        issued = issue_key(
            session,
            body.role,
            principal_id=body.principal_id,
            principal_kind=kind,
            label=body.label,
        )
        return 201, {**_out(issued.key), "token": issued.token}

    return await idempotent(request, session, caller, handler)


@router.get("")
def get_api_keys(session: SessionDep, _caller: AdminDep) -> list[ApiKeyOut]:
    return [ApiKeyOut(**_out(row)) for row in list_keys(session)]


@router.delete("/{key_id}")
def delete_api_key(key_id: str, session: SessionDep, _caller: AdminDep) -> ApiKeyOut:
    row = revoke_key(session, key_id)
    session.commit()
    return ApiKeyOut(**_out(row))
