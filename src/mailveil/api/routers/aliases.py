"""Aliases: who an alias was disclosed to (investigators only) and revocation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Cursor, Limit
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.aliases import alias_report, alias_view, revoke_alias

router = APIRouter(prefix="/v1/aliases", tags=["aliases"])
InvestigatorDep = Annotated[Caller, Depends(RoleGate(Role.INVESTIGATOR))]
RevokerDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.INVESTIGATOR))]


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


@router.get("/{address}")
def get_alias_report(
    address: str,
    session: SessionDep,
    _caller: InvestigatorDep,
    after_seq: Annotated[Cursor | None, Query(ge=0)] = None,
    limit: Annotated[Limit, Query()] = 1000,
) -> dict[str, Any]:
    """The customer and principal behind an alias and its ledger history, paged by seq."""
    return alias_report(session, address, after_seq=after_seq, limit=limit).to_dict()


@router.post("/{address}/revoke")
def post_revoke(
    address: str, body: RevokeIn, session: SessionDep, runtime: RuntimeDep, caller: RevokerDep
) -> dict[str, Any]:
    """Revoke an alias: mail to it is refused from then on; the revocation is in the ledger."""
    alias = revoke_alias(
        session,
        ledger=runtime.ledger,
        address=address,
        reason=body.reason,
        actor=caller.actor,
    )
    session.commit()
    return alias_view(alias)
