"""Reading what the witnesses said: cosignatures of a checkpoint, the newest witnessed
checkpoint, each witness's status. The API, the CLI, the console and evidence bundles use
these."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.ledger.append import Checkpoint, Ledger, checkpoint_at
from mailveil.witness.models import LedgerCosignature, LedgerWitnessStatus
from mailveil.witness.policy import WitnessConfig, parse_witnesses


def configured(settings: Settings) -> list[WitnessConfig]:
    return parse_witnesses(settings.witnesses)


def cosignatures_for(
    session: Session, tree_size: int, witnesses: list[WitnessConfig] | None = None
) -> list[LedgerCosignature]:
    """Stored cosignatures of one checkpoint (only by ``witnesses``, when given), by name."""
    stmt = select(LedgerCosignature).where(LedgerCosignature.tree_size == tree_size)
    if witnesses is not None:
        stmt = stmt.where(LedgerCosignature.witness.in_([w.name for w in witnesses]))
    return list(session.scalars(stmt.order_by(LedgerCosignature.witness)))


def cosigned_note(checkpoint: Checkpoint, cosignatures: list[LedgerCosignature]) -> str:
    """The checkpoint note with the witnesses' signature lines after the ledger's: a C2SP
    cosigned checkpoint any note verifier reads."""
    return checkpoint.note + "".join(c.line for c in cosignatures)


def witnessed_checkpoint(
    session: Session, settings: Settings, min_size: int = 1
) -> Checkpoint | None:
    """The newest checkpoint of at least ``min_size`` entries cosigned by a quorum of the
    configured witnesses, if any."""
    witnesses = configured(settings)
    if not witnesses:
        return None
    size = session.scalar(
        select(LedgerCosignature.tree_size)
        .where(
            LedgerCosignature.witness.in_([w.name for w in witnesses]),
            LedgerCosignature.tree_size >= min_size,
        )
        .group_by(LedgerCosignature.tree_size)
        .having(func.count() >= settings.witness_quorum)
        .order_by(LedgerCosignature.tree_size.desc())
        .limit(1)
    )
    return None if size is None else checkpoint_at(session, int(size))


def evidence_checkpoint(
    session: Session, settings: Settings, ledger: Ledger, min_size: int
) -> Checkpoint | None:
    """The checkpoint evidence should be proved against: the newest witnessed one that covers
    ``min_size`` entries, else a checkpoint of the ledger as it is now (signed if needed)."""
    return witnessed_checkpoint(session, settings, max(min_size, 1)) or ledger.checkpoint_now(
        session
    )


def evidence_fields(session: Session, settings: Settings, checkpoint: Checkpoint) -> dict[str, Any]:
    """What an evidence bundle's checkpoint carries of the witnesses: the cosigned note and
    the witnesses the operator publishes to (a verifier pins its own copy of their keys)."""
    witnesses = configured(settings)
    return {
        "cosigned_note": cosigned_note(
            checkpoint, cosignatures_for(session, checkpoint.tree_size, witnesses)
        ),
        "witnesses": [{"name": w.name, "verifier_key": w.vkey.vkey} for w in witnesses],
        "witness_quorum": settings.witness_quorum if witnesses else 0,
    }


def checkpoint_view(session: Session, settings: Settings, checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint with its cosignatures, as the API and the console show it."""
    witnesses = configured(settings)
    cosigs = cosignatures_for(session, checkpoint.tree_size, witnesses)
    return {
        **checkpoint.to_dict(),
        "cosigned_note": cosigned_note(checkpoint, cosigs),
        "cosignatures": [
            {
                "witness": c.witness,
                "key_id": c.key_id,
                "timestamp": c.timestamp,
                "line": c.line,
                "received_at": c.received_at.isoformat(),
            }
            for c in cosigs
        ],
        "quorum": settings.witness_quorum if witnesses else 0,
        "witnessed": bool(witnesses) and len(cosigs) >= settings.witness_quorum,
    }


def witness_statuses(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Each configured witness with what the ledger knows of it."""
    rows = {r.witness: r for r in session.scalars(select(LedgerWitnessStatus))}
    out = []
    for w in configured(settings):
        row = rows.get(w.name)
        out.append(
            {
                "witness": w.name,
                "vkey": w.vkey.vkey,
                "url": w.url,
                "cosigned_size": row.cosigned_size if row else 0,
                "last_attempt_at": _iso(row.last_attempt_at if row else None),
                "last_success_at": _iso(row.last_success_at if row else None),
                "last_error": row.last_error if row else None,
                "failures": row.failures if row else 0,
            }
        )
    return out


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


__all__ = [
    "checkpoint_view",
    "configured",
    "cosignatures_for",
    "cosigned_note",
    "evidence_checkpoint",
    "evidence_fields",
    "witness_statuses",
    "witnessed_checkpoint",
]
