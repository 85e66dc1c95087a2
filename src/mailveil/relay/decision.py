"""What the relay decided for one message: deliver it, hold it, or refuse it, with its entries.

Every path through the relay ends in one of these (``relay.decide`` for mail to an alias or
a reverse alias, ``relay.detection`` for a canary, ``relay.veto`` after the marketplace's
hook, ``relay.release`` for a quarantined message let go), and the handler acts on it in
one place:

``Deliver``
    The ``Outgoing`` message (its row and ``message`` entry) and the entries that go before
    it (a stranger's ``stranger_at_alias``, a ``quarantine_released``): committed, then
    handed to the smarthost (``relay.handoff``).
``Hold``
    Kept in the quarantine; its entry is committed before the reply is given.
``Refuse``
    The reply, and for a known alias the entry that records the refusal (committed first;
    no entry: nothing to record, e.g. a sender check that could not reach DNS, 4xx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from mailveil.ledger.events import Event
from mailveil.logs import scrub
from mailveil.relay.codes import Reply
from mailveil.relay.compose import Outgoing
from mailveil.relay.context import RelayContext
from mailveil.relay.identity import Known, Sender, sender_identity
from mailveil.relay.routes import Route
from mailveil.relay.sender_auth import SenderAuth

KIND_REFUSED = "message_refused"
KIND_STRANGER = "stranger_at_alias"
KIND_DEFERRED = "message_deferred"
KIND_REJECTED = "message_rejected"


@dataclass(frozen=True)
class Deliver:
    outgoing: Outgoing
    before: tuple[Event, ...] = ()  # entries committed with the message, before its own


@dataclass(frozen=True)
class Hold:
    reply: Reply
    event: Event


@dataclass(frozen=True)
class Refuse:
    reply: Reply
    event: Event | None = None


RelayDecision = Deliver | Hold | Refuse


def reply_text(reply: Reply) -> str:
    return f"{reply.code} {reply.enhanced}"


def refusal_event(
    route: Route,
    reply: Reply,
    *,
    actor: str | None,
    stage: str,
    why: str,
    relay_domain: str,
    reason: str | None = None,
) -> Event:
    return Event(
        kind=KIND_REFUSED,
        actor=actor,
        subject=route.customer_ref,
        alias=route.alias,
        purpose=route.direction,
        ref=reason,
        detail={
            "principal": route.principal_ref,
            "reply": reply_text(reply),
            "stage": stage,
            # Refusal details name counts and header fields; scrubbed all the same.
            "why": scrub(why, relay_domain)[:300],
        },
    )


def stranger_event(
    session: Session | None,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    reply: Reply,
    *,
    header_from: str | None = None,
    auth: SenderAuth | None = None,
    extra: dict[str, Any] | None = None,
) -> Event:
    """The ``stranger_at_alias`` signal: someone other than the principal the alias was
    disclosed to wrote to it. The detail identifies the stranger (``identity``); ``extra``
    says what was done with the message (action, quarantine sha256 and size...)."""
    known = Known(bytes(route.customer.address_bidx), route.customer_ref)
    identity = sender_identity(
        session, ctx, sender, known=known, header_from=header_from, auth=auth
    )
    return Event(
        kind=KIND_STRANGER,
        actor=sender.actor,
        subject=route.customer_ref,
        alias=route.alias,
        purpose=route.direction,
        detail={
            "principal": route.principal_ref,
            "reply": reply_text(reply),
            "revoked": route.revoked,
            **identity,
            **(extra or {}),
        },
    )


def outcome_event(outgoing: Outgoing, route: Route, kind: str, reply: Reply) -> Event:
    """The ledger event for a message the smarthost did not take (deferred or rejected)."""
    return Event(
        kind=kind,
        actor="system",
        subject=route.customer_ref,
        alias=route.alias,
        purpose=route.direction,
        ref=outgoing.row["reason"],
        detail={"relay_message": outgoing.token, "reply": reply_text(reply)},
    )


__all__ = [
    "KIND_DEFERRED",
    "KIND_REFUSED",
    "KIND_REJECTED",
    "KIND_STRANGER",
    "Deliver",
    "Hold",
    "Refuse",
    "RelayDecision",
    "outcome_event",
    "refusal_event",
    "reply_text",
    "stranger_event",
]
