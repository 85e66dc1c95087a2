"""A stranger at an alias: mail to a customer's alias from anyone but the principal it was
disclosed to. The alias names who leaked it; the sender's identity (``identity``) names who
received it. Every such message is a ``stranger_at_alias`` ledger entry, whatever happens to
it; what happens is ``settings.relay_stranger_action``:

``quarantine`` (default)
    Accept (``250 2.7.0`` held) and keep the message in the quarantine (``quarantine``); the
    entry carries its sha256 and size. ``mailveil quarantine release`` delivers it later as
    ``banner`` would.
``refuse``
    ``550 5.7.1`` (``5.2.1`` for a revoked alias); at RCPT for a client authenticated as
    another principal, at DATA otherwise.
``banner``
    Deliver to the customer as the alias's principal's messages are (From: that principal's
    reverse alias, the stranger's addresses hidden, DKIM-signed, VERP, a ``message`` entry),
    with a warning prepended to every text part (``compose``). The operator's content rules
    still apply.
    A message that cannot be delivered so (a revoked alias, a deleted, bouncing or canary
    customer, a content rule, a text part that cannot be read) is quarantined instead and
    the entry says why: never delivered without its warning, never dropped.

Mail to a canary's alias is always kept as evidence, never delivered (except ``refuse``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sqlalchemy.orm import Session

from mailveil.relay import codes, compose, quarantine
from mailveil.relay.compose import Outgoing
from mailveil.relay.content_rules import check_content
from mailveil.relay.context import RelayContext
from mailveil.relay.decision import Deliver, Hold, Refuse, RelayDecision, stranger_event
from mailveil.relay.errors import RelayRefusal
from mailveil.relay.identity import Sender
from mailveil.relay.relay_copy import relay_copy
from mailveil.relay.routes import Route
from mailveil.relay.sender_auth import SenderAuth

ACTIONS = ("quarantine", "refuse", "banner")


@dataclass(frozen=True)
class Stranger:
    """The sender is not the alias's principal: the parsed message and what its sender
    proved, for ``stranger_decision``."""

    message: EmailMessage = field(repr=False)
    header_from: str = field(repr=False)
    auth: SenderAuth | None = None


def undeliverable(route: Route) -> str | None:
    """Why a stranger's message to this alias may not be delivered even with a warning."""
    if route.revoked:
        return "alias revoked"
    if route.customer.deleted_at is not None:
        return "customer deleted"
    if route.customer.is_canary:
        return "canary"
    if route.customer_bouncing:
        return "customer's address bouncing"
    return None


def banner_outgoing(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    message: EmailMessage,
    header_from: str,
) -> Outgoing:
    """The stranger's message rewritten as the alias's principal's would be, with its
    warning. Raises ``RelayRefusal`` (a content rule, a message that cannot be rewritten)."""
    check_content(ctx.messaging, message)
    return compose.to_customer(
        session, ctx, route, sender, message, header_from, actor=sender.actor, reason=None,
        banner=True,
    )  # fmt: skip


def hold(
    session: Session | None,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    raw: bytes,
    found: Stranger,
    *,
    fallback: str | None = None,
    facts: dict[str, Any] | None = None,
) -> Hold:
    """Quarantine ``raw`` (the file first, then the entry the handler commits)."""
    kept = quarantine.store(ctx.settings.data_dir, raw)
    extra: dict[str, Any] = {
        "action": "quarantine",
        "sha256": kept.sha256,
        "size": kept.size,
        **(facts or {}),
    }
    if fallback:
        extra["fallback"] = fallback
    event = stranger_event(
        session,
        ctx,
        route,
        sender,
        codes.QUARANTINED,
        header_from=found.header_from,
        auth=found.auth,
        extra=extra,
    )
    return Hold(codes.QUARANTINED, event)


def stranger_decision(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    raw: bytes,
    found: Stranger,
) -> RelayDecision:
    """What ``relay_stranger_action`` makes of a stranger's message (module docstring)."""
    action = ctx.settings.relay_stranger_action
    facts = copy_facts(session, ctx, route, raw, found)
    if action == "refuse":
        reply = codes.MAILBOX_DISABLED if route.revoked else codes.NOT_AUTHORIZED
        event = stranger_event(
            session,
            ctx,
            route,
            sender,
            reply,
            header_from=found.header_from,
            auth=found.auth,
            extra={"action": "refuse", **facts},
        )
        return Refuse(reply, event)
    fallback = None
    if action == "banner":
        fallback = undeliverable(route)
        if fallback is None:
            try:
                out = banner_outgoing(session, ctx, route, sender, found.message, found.header_from)
            except RelayRefusal as exc:
                fallback = f"{exc.code}: {exc.reply.code} {exc.reply.enhanced}"
            else:
                event = stranger_event(
                    session,
                    ctx,
                    route,
                    sender,
                    codes.QUEUED,
                    header_from=found.header_from,
                    auth=found.auth,
                    extra={"action": "banner", "relay_message": out.token, **facts},
                )
                return Deliver(out, (event,))
    return hold(session, ctx, route, sender, raw, found, fallback=fallback, facts=facts)


def copy_facts(
    session: Session, ctx: RelayContext, route: Route, raw: bytes, found: Stranger
) -> dict[str, Any]:
    """``{"relay_copy": ...}`` when the stranger's message is a copy of mail the relay
    delivered (``relay_copy``), for the attribution to read; else nothing."""
    copy = relay_copy(
        session,
        relay_domain=ctx.settings.relay_domain,
        verp_key=ctx.verp_keys,
        signer=ctx.dkim,
        raw=raw,
        message=found.message,
        arrived_at=route.alias,
    )
    return {"relay_copy": copy} if copy is not None else {}


def refuse_at_rcpt(ctx: RelayContext) -> bool:
    """A client authenticated as another principal is refused at RCPT only in refuse mode."""
    return ctx.settings.relay_stranger_action == "refuse"


__all__ = [
    "ACTIONS",
    "Stranger",
    "banner_outgoing",
    "copy_facts",
    "hold",
    "refuse_at_rcpt",
    "stranger_decision",
    "undeliverable",
]
