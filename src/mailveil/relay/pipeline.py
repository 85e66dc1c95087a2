"""What the relay does with one message once DATA is in: check, rewrite, sign, address.

These functions are synchronous (parsing, DNS for SPF/DKIM/DMARC, rewriting and signing are
CPU or blocking work); the handler runs them in a worker thread with a session that touches
the database only when it must (a thread lookup, a data key not yet cached, a stranger's
address compared with customers). Each returns an ``Outgoing`` (what to hand the smarthost,
the relay_messages row and the ``message`` ledger event) or a ``Refused`` (the reply and, for
a known alias, the ledger event that records the refusal).

The customer's real address is decrypted here, only to redact it and to address the
smarthost transaction (``Outgoing.rcpt``, kept out of ``repr``); it is never logged, never
in a reply, never in the ledger.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sqlalchemy.orm import Session

from mailveil.contacts.customers import customer_address
from mailveil.db.base import utcnow
from mailveil.errors import InvalidInput
from mailveil.ledger.events import Event
from mailveil.logs import scrub
from mailveil.policy.engine import Decision
from mailveil.relay import codes
from mailveil.relay.codes import Reply
from mailveil.relay.content_rules import (
    PolicyRefusal,
    check_content,
    contact_reason,
    decide_message,
    referenced_ids,
)
from mailveil.relay.context import RelayContext
from mailveil.relay.errors import DuplicateFrom, MissingFrom, RelayRefusal
from mailveil.relay.identity import Known, Sender, sender_identity
from mailveil.relay.lifecycle import seller_gate
from mailveil.relay.messages import (
    DIRECTION_TO_CUSTOMER,
    DIRECTION_TO_PRINCIPAL,
    new_token,
    thread_exists,
    verp_address,
)
from mailveil.relay.parse import header_text, parse_message
from mailveil.relay.rewrite import (
    new_message_id,
    rewrite_customer_to_principal,
    rewrite_principal_to_customer,
)
from mailveil.relay.routes import Route
from mailveil.relay.sender_auth import (
    SenderAuth,
    check_sender,
    customer_sender_ok,
    parse_mailbox,
    sender_matches_principal,
)
from mailveil.relay.trackers import strip_for_customer as strip_trackers

log = logging.getLogger("mailveil.relay")

KIND_MESSAGE = "message"
KIND_REFUSED = "message_refused"
KIND_STRANGER = "stranger_at_alias"
KIND_DEFERRED = "message_deferred"
KIND_REJECTED = "message_rejected"


@dataclass(frozen=True)
class Outgoing:
    token: str
    mail_from: str  # the VERP address
    rcpt: str = field(repr=False)  # the other side's real address
    data: bytes = field(repr=False)
    row: dict[str, Any] = field(repr=False)
    event: Event = field(repr=False)


@dataclass(frozen=True)
class Refused:
    reply: Reply
    event: Event | None = None


@dataclass(frozen=True)
class Stranger:
    """The sender is not the alias's principal. What happens next is the operator's setting
    (``strangers``): the parsed message and what its sender proved go with it."""

    message: EmailMessage = field(repr=False)
    header_from: str = field(repr=False)
    auth: SenderAuth | None = None


Outcome = Outgoing | Refused | Stranger


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


def header_from_address(message: EmailMessage) -> str:
    """The one From mailbox (lowercased); MissingFrom / DuplicateFrom otherwise."""
    values = [str(v) for k, v in message.raw_items() if k.lower() == "from"]
    if not values:
        raise MissingFrom("no From header field")
    if len(values) > 1:
        raise DuplicateFrom(f"{len(values)} From header fields")
    parsed = parse_mailbox(header_text(values[0]))
    return parsed[0] if parsed else ""


def outgoing(
    ctx: RelayContext,
    route: Route,
    *,
    direction: str,
    actor: str | None,
    reason: str | None,
    data: bytes,
    message_id: str,
    rcpt: str,
) -> Outgoing:
    signed = ctx.dkim.sign(data)
    digest = hashlib.sha256(signed).hexdigest()
    token = new_token()
    now = utcnow()
    row = {
        "token": token,
        "direction": direction,
        "principal_id": route.principal_id,
        "customer_id": route.customer_id,
        "alias": route.alias,
        "reason": reason,
        "message_id": message_id,
        "size": len(signed),
        "sha256": digest,
        "status": "sending",
        "created_at": now,
        "updated_at": now,
    }
    event = Event(
        kind=KIND_MESSAGE,
        actor=actor,
        subject=route.customer_ref,
        alias=route.alias,
        purpose=direction,
        ref=reason,
        detail={
            "principal": route.principal_ref,
            "size": len(signed),
            "sha256": digest,
            "relay_message": token,
        },
    )
    return Outgoing(
        token=token,
        mail_from=verp_address(ctx.verp_key, token, ctx.settings.relay_domain),
        rcpt=rcpt,
        data=signed,
        row=row,
        event=event,
    )


def _check_sender(
    ctx: RelayContext, raw: bytes, sender: Sender, rcpt: str | None = None
) -> SenderAuth:
    return check_sender(
        raw,
        mail_from="" if sender.mail_from in ("", "<>") else sender.mail_from,
        client_ip=sender.client_ip,
        helo=sender.helo,
        resolver=ctx.resolver,
        rcpt=rcpt,
    )


def to_customer(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    raw: bytes,
    *,
    contact: Decision | None,
    stranger: bool = False,
) -> Outcome:
    """A principal's message to a customer's alias (module docstring). ``stranger``: the
    client authenticated as another principal (decided at RCPT), so From proves nothing."""
    settings = ctx.settings
    domain = settings.relay_domain
    verified = sender.principal_id == route.principal_id and not stranger
    actor = route.principal_ref if verified else None

    def refused(
        reply: Reply, why: str, reason: str | None = None, policies: tuple[str, ...] = ()
    ) -> Refused:
        event = refusal_event(
            route, reply, actor=actor, stage="data", why=why, relay_domain=domain, reason=reason
        )
        if policies:  # which Cedar policies decided (an operator's own rule is named too)
            event.detail["policies"] = list(policies)
        return Refused(reply, event)

    try:
        message = parse_message(raw, ctx.limits)
        header_from = header_from_address(message)
    except RelayRefusal as exc:
        return refused(exc.reply, str(exc))
    if stranger:
        return Stranger(message, header_from, _check_sender(ctx, raw, sender, route.alias))
    if not verified:
        auth = _check_sender(ctx, raw, sender, route.alias)
        attrs = route.principal.attributes or {}
        if not sender_matches_principal(
            auth,
            sending_addresses=list(attrs.get("sending_addresses") or []),
            sending_domains=list(attrs.get("sending_domains") or []),
            envelope_from=sender.mail_from,
            header_from=header_from,
        ):
            if auth.temporary_failure:
                return Refused(codes.SENDER_AUTH_TEMPORARY)
            return Stranger(message, header_from, auth)
        verified, actor = True, route.principal_ref
    ended = seller_gate(settings, route)  # first: expired aliases look alike (relay.lifecycle)
    if ended is not None:
        return refused(*ended)
    early = principal_gate(route)
    if early is not None:
        return refused(early, "alias revoked, sender suspended or customer deleted")
    if contact is None:
        contact = route.contact_decision(settings, ctx.runtime.policy)
    if not contact.allowed:
        return refused(codes.CONTACT_NOT_ALLOWED, contact.reason)
    reason = contact_reason(message)
    try:
        check_content(ctx.messaging, message)
        references = referenced_ids(message)
        reason = decide_message(
            ctx.runtime.policy,
            ctx.messaging,
            route.policy_input(settings),
            reason=reason,
            order_status=route.order_status,
            references=bool(references),
            in_thread=lambda: thread_exists(
                session,
                customer_id=route.customer_id,
                principal_id=route.principal_id,
                message_ids=references,
            ),
        )
    except PolicyRefusal as exc:
        known = reason if reason in ctx.messaging.known_reasons else None
        return refused(exc.reply, str(exc), known, exc.policies)
    except RelayRefusal as exc:
        known = reason if reason in ctx.messaging.known_reasons else None
        return refused(exc.reply, str(exc), known)
    trackers = strip_trackers(settings, message)  # before rewriting: relay.trackers
    hidden = {a: route.reverse_alias for a in route.principal_addresses()}
    # Every mailbox on the principal's domains is its own, not only the ones it registered.
    domains = list((route.principal.attributes or {}).get("sending_domains") or [])
    for address in (sender.mail_from, header_from):
        if address and "@" in address and not _on_relay_domain(address, domain):
            hidden[address.lower()] = route.reverse_alias
    message_id = new_message_id(domain)
    try:
        data = rewrite_principal_to_customer(
            message,
            reverse_alias=route.reverse_alias,
            redactions=hidden,
            relay_domain=domain,
            message_id=message_id,
            hidden_domains=domains,
        )
    except RelayRefusal as exc:
        return refused(exc.reply, str(exc), reason)
    rcpt = customer_address(session, ctx.runtime.vault, route.customer)
    out = outgoing(
        ctx,
        route,
        direction=DIRECTION_TO_CUSTOMER,
        actor=route.principal_ref,
        reason=reason,
        data=data,
        message_id=message_id,
        rcpt=rcpt,
    )
    if trackers is not None:
        out.event.detail["trackers"] = trackers
    return out


def principal_gate(route: Route) -> Reply | None:
    """Refusals that need only the route, for a sender known to be the alias's principal."""
    if route.revoked or route.customer.deleted_at is not None:
        return codes.MAILBOX_DISABLED
    if route.principal.status != "active":
        return codes.SENDER_SUSPENDED
    if route.customer_bouncing:
        return codes.RECIPIENT_BOUNCING
    return None


def customer_gate(route: Route) -> Reply | None:
    """Refusals that need only the route, for mail to a reverse alias."""
    if route.revoked or route.customer.deleted_at is not None or route.principal.status != "active":
        return codes.MAILBOX_DISABLED
    if route.delivery_address() is None:
        return codes.NO_DELIVERY_ADDRESS
    if route.principal_bouncing:
        return codes.RECIPIENT_BOUNCING
    return None


def _on_relay_domain(address: str, relay_domain: str) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return domain == relay_domain or domain.endswith("." + relay_domain)


def to_principal(
    session: Session, ctx: RelayContext, route: Route, sender: Sender, raw: bytes
) -> Outgoing | Refused:
    """A customer's message to a principal's reverse alias (module docstring)."""
    domain = ctx.settings.relay_domain

    def refused(reply: Reply, why: str) -> Refused:
        return Refused(
            reply,
            refusal_event(route, reply, actor=None, stage="data", why=why, relay_domain=domain),
        )

    gate = customer_gate(route)
    if gate is not None:
        return refused(gate, "alias revoked, recipient unavailable or customer deleted")
    try:
        message = parse_message(raw, ctx.limits)
        header_from = header_from_address(message)
    except RelayRefusal as exc:
        return refused(exc.reply, str(exc))
    real = customer_address(session, ctx.runtime.vault, route.customer)
    auth = _check_sender(ctx, raw, sender)
    from_is_customer = False
    if header_from:
        try:
            from_is_customer = bytes(
                route.customer.address_bidx
            ) in ctx.runtime.vault.blind_indexes(header_from)
        except InvalidInput:
            from_is_customer = False
    if not (from_is_customer and customer_sender_ok(auth, real.rpartition("@")[2])):
        if auth.temporary_failure:
            return Refused(codes.SENDER_AUTH_TEMPORARY)
        return refused(
            codes.SENDER_NOT_AUTHENTICATED,
            f"from matches customer: {from_is_customer}; spf {auth.spf}; dmarc {auth.dmarc_result}",
        )
    hidden = {real.lower(): route.alias}
    for address in (sender.mail_from, header_from):
        if address and "@" in address:
            hidden[address.lower()] = route.alias
    message_id = new_message_id(domain)
    try:
        data = rewrite_customer_to_principal(
            message,
            customer_alias=route.alias,
            redactions=hidden,
            relay_domain=domain,
            message_id=message_id,
        )
    except RelayRefusal as exc:
        return refused(exc.reply, str(exc))
    rcpt = route.delivery_address()
    assert rcpt is not None  # customer_gate refused it otherwise
    return outgoing(
        ctx,
        route,
        direction=DIRECTION_TO_PRINCIPAL,
        actor=route.customer_ref,
        reason=None,
        data=data,
        message_id=message_id,
        rcpt=rcpt,
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
    "KIND_MESSAGE",
    "KIND_REFUSED",
    "KIND_REJECTED",
    "KIND_STRANGER",
    "Outcome",
    "Outgoing",
    "Refused",
    "Sender",
    "Stranger",
    "customer_gate",
    "header_from_address",
    "outcome_event",
    "outgoing",
    "principal_gate",
    "refusal_event",
    "reply_text",
    "stranger_event",
    "to_customer",
    "to_principal",
]
