"""Suspending a principal: status suspended, every alias disclosed to it revoked (mail to
them is refused from then on), every open reveal request or grant of it revoked, all in the
ledger. Reinstating restores the status only: revoked aliases are never re-issued silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.models import RevealRequest
from mailveil.access.reveals import close_open_reveals
from mailveil.contacts import validation as v
from mailveil.contacts.models import Alias, Principal
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event

REVOKE_BATCH = 5000


@dataclass(frozen=True)
class Suspension:
    principal_id: int
    aliases_revoked: int
    reveals_revoked: int
    ledger_seq: int


def suspend_principal(
    session: Session,
    *,
    ledger: Ledger,
    principal_id: int,
    reason: str,
    actor: str,
) -> Suspension:
    """Suspend and contain. Does not commit. Suspending twice is a Conflict."""
    reason = v.text(reason, "reason", 500, allow_empty=False).strip()
    principal = session.get(Principal, principal_id, with_for_update=True)
    if principal is None:
        raise NotFound(f"no principal {principal_id}")
    if principal.status == "suspended":
        raise Conflict(f"principal {principal_id} is already suspended")
    principal.status = "suspended"
    principal.updated_at = utcnow()
    revoked, reveals = revoke_everything(
        session,
        ledger=ledger,
        principal_id=principal_id,
        reason=f"principal suspended: {reason}",
        actor=actor,
    )
    seq = ledger.append(
        session,
        [
            Event(
                "principal_suspended",
                actor,
                f"principal:{principal_id}",
                detail={"reason": reason, "aliases_revoked": revoked, "reveals_revoked": reveals},
            )
        ],
    )[0]
    return Suspension(principal_id, revoked, reveals, seq)


def revoke_everything(
    session: Session,
    *,
    ledger: Ledger,
    principal_id: int,
    reason: str,
    actor: str,
) -> tuple[int, int]:
    """Revoke every live alias disclosed to the principal and every open reveal request or
    grant of it (one ledger entry each); (aliases, reveals) revoked. Does not commit."""
    now = utcnow()
    revoked = 0
    while True:
        batch = list(
            session.scalars(
                select(Alias)
                .where(Alias.principal_id == principal_id, Alias.revoked_at.is_(None))
                .order_by(Alias.id)
                .limit(REVOKE_BATCH)
            )
        )
        if not batch:
            break
        events = []
        for alias in batch:
            alias.revoked_at = now
            alias.revoked_reason = reason[:500]
            alias.revoked_by = actor
            events.append(
                Event(
                    "alias_revoked",
                    actor,
                    f"customer:{alias.customer_id}",
                    alias.address,
                    detail={
                        "principal": f"principal:{principal_id}",
                        "reason": alias.revoked_reason,
                    },
                )
            )
        session.flush()
        ledger.append(session, events)
        revoked += len(batch)
    reveals = close_open_reveals(
        session,
        ledger=ledger,
        where=RevealRequest.requester_id == principal_id,
        status="revoked",
        reason=reason[:500],
        actor=actor,
        kind="reveal_revoked",
    )
    return revoked, reveals


def reinstate_principal(
    session: Session,
    *,
    ledger: Ledger,
    principal_id: int,
    reason: str,
    actor: str,
) -> int:
    """Active again; its revoked aliases stay revoked. Returns the ledger entry."""
    reason = v.text(reason, "reason", 500, allow_empty=False).strip()
    principal = session.get(Principal, principal_id, with_for_update=True)
    if principal is None:
        raise NotFound(f"no principal {principal_id}")
    if principal.status != "suspended":
        raise Conflict(f"principal {principal_id} is not suspended")
    principal.status = "active"
    principal.updated_at = utcnow()
    session.flush()
    event = Event(
        "principal_reinstated", actor, f"principal:{principal_id}", detail={"reason": reason}
    )
    return ledger.append(session, [event])[0]


__all__ = ["Suspension", "reinstate_principal", "revoke_everything", "suspend_principal"]
