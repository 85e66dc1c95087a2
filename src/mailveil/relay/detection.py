"""Mail the relay takes as evidence rather than for delivery: to a canary's own address, and
to the abuse mailbox.

Canaries' real addresses (``access.canaries``) live on ``settings.canary_domain``, which the
operator routes to mailveil. No legitimate principal ever writes there, so a message to one
is a leak: it is accepted (a plain ``250``: telling the sender the address is a trap would
let it clean its list), quarantined, and recorded as a ``canary_hit`` naming the principal
the canary was planted for and the sender's identity. Anything else on that domain gets
``550 5.1.1``, decided at RCPT with one indexed lookup (blind index).

The abuse mailbox (``abuse_mailbox_local`` at the relay domain) is ``abuse_intake``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.models import Canary
from mailveil.contacts.models import Customer
from mailveil.errors import InvalidInput
from mailveil.ledger.events import Event
from mailveil.relay import codes, quarantine
from mailveil.relay.context import RelayContext
from mailveil.relay.decision import Hold, reply_text
from mailveil.relay.identity import Known, Sender, check_sender_of, sender_identity
from mailveil.relay.sender_auth import from_mailbox_of

KIND_CANARY_HIT = "canary_hit"


@dataclass(frozen=True)
class CanaryTarget:
    """A canary found by its real address at RCPT (ids only in the ledger; the address is
    held for the transaction, to see what a DKIM signature covers of it)."""

    customer_id: int
    principal_id: int
    bidx: bytes = b""
    rcpt: str = field(default="", repr=False)

    @property
    def customer_ref(self) -> str:
        return f"customer:{self.customer_id}"


def find_canary(session: Session, ctx: RelayContext, address: str) -> CanaryTarget | None:
    """The canary whose real address this is, or None (an unknown address)."""
    try:
        indexes = ctx.runtime.vault.blind_indexes(address)
    except InvalidInput:
        return None
    row = session.execute(
        select(Customer.id, Canary.principal_id, Customer.address_bidx)
        .join(Canary, Canary.customer_id == Customer.id)
        .where(Customer.address_bidx.in_(indexes), Customer.is_canary.is_(True))
    ).first()
    return CanaryTarget(row[0], row[1], bytes(row[2]), address) if row is not None else None


def canary_hit(
    session: Session, ctx: RelayContext, target: CanaryTarget, sender: Sender, raw: bytes
) -> Hold:
    """Quarantine a message to a canary's own address; the ``canary_hit`` entry to commit.

    DNS that does not answer only weakens the evidence (results say temperror): the
    message is kept either way, since a leak's buyer may never send again."""
    mailbox = from_mailbox_of(raw)
    auth = check_sender_of(ctx, sender, raw, target.rcpt)
    kept = quarantine.store(ctx.settings.data_dir, raw)
    identity = sender_identity(
        session,
        ctx,
        sender,
        known=Known(target.bidx, target.customer_ref),
        header_from=mailbox[0] if mailbox else "",
        auth=auth,
    )
    event = Event(
        kind=KIND_CANARY_HIT,
        actor=sender.actor,
        subject=target.customer_ref,
        detail={
            "principal": f"principal:{target.principal_id}",
            "reply": reply_text(codes.QUEUED),
            "action": "quarantine",
            "sha256": kept.sha256,
            "size": kept.size,
            **identity,
        },
    )
    return Hold(codes.QUEUED, event)


__all__ = ["KIND_CANARY_HIT", "CanaryTarget", "canary_hit", "find_canary"]
