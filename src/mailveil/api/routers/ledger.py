"""The ledger's public face: the latest signed checkpoint and proofs against it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mailveil.api.deps import CallerDep, RuntimeDep, SessionDep
from mailveil.errors import NotFound
from mailveil.ledger import proofs
from mailveil.ledger.append import checkpoint_now

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])


@router.get("/checkpoint")
def get_checkpoint(session: SessionDep, runtime: RuntimeDep, _caller: CallerDep) -> dict[str, Any]:
    """A signed checkpoint (C2SP signed note) of the ledger as it is now, and the key that
    verifies it. Signs a fresh one when entries were appended since the last."""
    checkpoint = checkpoint_now(session, runtime.settings, runtime.signer)
    session.commit()
    if checkpoint is None:
        raise NotFound("no checkpoint yet: the ledger is empty")
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root.hex(),
        "time": checkpoint.created_at.isoformat(),
        "note": checkpoint.note,
        "public_key": runtime.signer.public_key_b64(),
        "key_name": runtime.signer.key_name,
    }


@router.get("/proof/inclusion")
def get_inclusion_proof(
    session: SessionDep,
    _caller: CallerDep,
    index: Annotated[int, Query(ge=0, description="leaf index (= sequence number)")],
    tree_size: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    return proofs.inclusion_proof(session, index, tree_size)


@router.get("/proof/consistency")
def get_consistency_proof(
    session: SessionDep,
    _caller: CallerDep,
    first: Annotated[int, Query(ge=1)],
    second: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    return proofs.consistency_proof(session, first, second)
