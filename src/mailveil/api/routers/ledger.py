"""The ledger's public face: its verifier key, the latest signed checkpoint with the
witnesses' cosignatures, proofs against it, the witnesses' status and alerts, and checking a
checkpoint or an evidence bundle."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from mailveil.api.deps import CallerDep, RoleGate, RuntimeDep, SessionDep
from mailveil.api.types import Count, Cursor, Limit
from mailveil.auth.keys import Caller, Role
from mailveil.detect.evidence import verify_bundle
from mailveil.errors import Conflict, InvalidInput, NotFound
from mailveil.ledger import proofs
from mailveil.ledger.notes import ALG_ED25519, verifier_key
from mailveil.runtime import Runtime
from mailveil.witness.alerts import list_alerts
from mailveil.witness.policy import check_checkpoint
from mailveil.witness.publish import publish_latest
from mailveil.witness.queries import (
    checkpoint_view,
    configured,
    witness_statuses,
    witnessed_checkpoint,
)

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])
AdminDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN))]


def _key_document(runtime: Runtime) -> dict[str, str]:
    ledger = runtime.ledger
    return verifier_key(ledger.signer.key_name, ledger.signer.public_key, ALG_ED25519).document()


@router.get("/key")
def get_key(runtime: RuntimeDep) -> dict[str, str]:
    """The key that verifies the ledger's checkpoints, public (no API key needed):
    ``verifier_key`` in the C2SP signed-note form (``<name>+<key ID>+<base64>``), which
    `mailveil incidents verify --key`, the stand-alone verifier and Go's sumdb/note take, and
    the raw ``public_key`` (base64), which they take too."""
    return _key_document(runtime)


@router.get("/checkpoint")
def get_checkpoint(
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: CallerDep,
    witnessed: Annotated[
        bool, Query(description="the newest checkpoint a quorum of witnesses cosigned")
    ] = False,
) -> dict[str, Any]:
    """A signed checkpoint (C2SP signed note) of the ledger as it is now, with the
    cosignatures the witnesses returned for it and the key that verifies it. Signs a fresh
    one when entries were appended since the last (its cosignatures follow once it is
    published); ``?witnessed=true`` gives the newest witnessed one instead."""
    if witnessed:
        checkpoint = witnessed_checkpoint(session, runtime.settings)
        if checkpoint is None:
            raise NotFound("no checkpoint has been cosigned by a quorum of witnesses yet")
    else:
        checkpoint = runtime.ledger.checkpoint_now(session)
        session.commit()
        if checkpoint is None:
            raise NotFound("no checkpoint yet: the ledger is empty")
    key = _key_document(runtime)
    return {
        **checkpoint_view(session, runtime.settings, checkpoint),
        "verifier_key": key["verifier_key"],
        "public_key": key["public_key"],
        "key_name": key["key_name"],
    }


@router.get("/proof/inclusion")
def get_inclusion_proof(
    session: SessionDep,
    _caller: CallerDep,
    index: Annotated[Cursor, Query(description="leaf index (= sequence number)")],
    tree_size: Annotated[Count | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    return proofs.inclusion_proof(session, index, tree_size)


@router.get("/proof/consistency")
def get_consistency_proof(
    session: SessionDep,
    _caller: CallerDep,
    first: Annotated[Count, Query()],
    second: Annotated[Count | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    return proofs.consistency_proof(session, first, second)


@router.get("/witnesses")
def get_witnesses(session: SessionDep, runtime: RuntimeDep, _caller: CallerDep) -> dict[str, Any]:
    """The configured witnesses, how far each cosigned the ledger, and their last errors."""
    witnessed = witnessed_checkpoint(session, runtime.settings)
    return {
        "quorum": runtime.settings.witness_quorum if configured(runtime.settings) else 0,
        "items": witness_statuses(session, runtime.settings),
        "witnessed_tree_size": witnessed.tree_size if witnessed else None,
    }


@router.post("/witnesses/publish")
def post_publish(runtime: RuntimeDep, _caller: AdminDep) -> dict[str, Any]:
    """Sign a checkpoint if needed and submit it to every witness now (the background job
    does this every ``checkpoint_every_seconds``)."""
    if not configured(runtime.settings):
        raise Conflict("no witnesses are configured (the `witnesses` setting)")
    report = publish_latest(runtime.session_factory, runtime.settings, runtime.ledger)
    return {
        "tree_size": report.checkpoint.tree_size if report.checkpoint else None,
        "cosigned": report.cosigned,
        "outcomes": [
            {
                "witness": o.witness,
                "result": o.result,
                "witness_size": o.witness_size,
                "detail": o.detail,
                "alert": o.alert.to_dict() if o.alert else None,
            }
            for o in report.outcomes
        ],
    }


@router.get("/alerts")
def get_alerts(
    session: SessionDep,
    _caller: CallerDep,
    limit: Annotated[Limit, Query()] = 100,
) -> dict[str, Any]:
    """Witness disagreements recorded in the ledger (``witness_alert`` entries), newest first."""
    return {"items": list_alerts(session, limit)}


class VerifyRequest(BaseModel):
    """A checkpoint note or an evidence bundle, and who must have signed it."""

    # Exactly one of the two, as the route checks (declared so the document says so too).
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["checkpoint"], "properties": {"checkpoint": {"type": "string"}}},
                {"required": ["bundle"], "properties": {"bundle": {"type": "object"}}},
            ]
        }
    )

    checkpoint: str | None = Field(None, description="a signed (and cosigned) checkpoint note")
    bundle: dict[str, Any] | None = Field(None, description="an evidence bundle (JSON)")
    key: str | None = Field(
        None, description="the ledger key to pin (vkey or base64); default: this ledger's"
    )
    witnesses: list[str] | None = Field(
        None, description="witness verifier keys; default: the configured witnesses"
    )
    quorum: Count | None = Field(None, description="default: the configured quorum")


@router.post("/verify")
def post_verify(body: VerifyRequest, runtime: RuntimeDep, _caller: CallerDep) -> dict[str, Any]:
    """Check a checkpoint or an evidence bundle, as `mailveil ledger verify-checkpoint` and
    `incidents verify` do. A third party should run the stand-alone verifier instead: this
    answer is only as trustworthy as this server."""
    if (body.checkpoint is None) == (body.bundle is None):
        raise InvalidInput("give exactly one of checkpoint or bundle")
    settings = runtime.settings
    key = body.key or _key_document(runtime)["verifier_key"]
    if body.witnesses is None:
        witnesses = [w.vkey.vkey for w in configured(settings)]
        quorum = body.quorum or (settings.witness_quorum if witnesses else None)
    else:
        witnesses, quorum = body.witnesses, body.quorum
    if body.checkpoint is not None:
        check = check_checkpoint(body.checkpoint, key, witnesses, quorum)
        return {
            "ok": check.ok,
            "signed": check.signed,
            "tree_size": check.checkpoint.size if check.checkpoint else None,
            "cosigned_by": [c.name for c in check.cosigners],
            "quorum": check.quorum,
            "problems": check.problems,
        }
    result = verify_bundle(body.bundle, verifier_key=key, witnesses=witnesses, quorum=quorum)
    return {
        "ok": result.ok,
        "checks": [{"check": w, "passed": p, "detail": d} for w, p, d in result.checks],
        "warnings": result.warnings,
    }
