"""What the relay does with one message once DATA is in: the one place it is decided.

``decide`` gives a ``relay.decision``: ``Deliver`` (checked, rewritten, signed, addressed),
``Hold`` or ``Refuse``, each with its ledger entries. It is synchronous (parsing, DNS for
SPF/DKIM/DMARC, rewriting and signing are CPU or blocking work), with a session that touches
the database only when it must (a thread lookup, a data key not yet cached, a stranger's
address compared with customers). The handler runs an authenticated principal's small message
on the event loop with a session that refuses I/O, and in a worker thread whatever needs it
(``Database.run_inline``, then ``Database.run``).

To a customer's alias (``_to_customer``)
    The sender must be the alias's principal: authenticated as it (SMTP AUTH), or proved by
    SPF/DKIM/DMARC for one of its sending addresses or domains. Anyone else is a stranger,
    and ``relay.strangers`` decides (quarantine, refuse or banner). The principal's message
    then passes the lifecycle, the gates, the contact policy, the content rules and the
    messaging policy (``relay.content_rules``), loses its trackers, and is composed for the
    customer (``relay.compose``).
To a principal's reverse alias (``_to_principal``)
    The From must be the customer's own address (blind index) and authenticated for its
    domain; then the customer's real address is replaced by the alias in every form.

The customer's real address is decrypted here, only to redact it and to address the
smarthost transaction (``Outgoing.rcpt``, kept out of ``repr``); it is never logged, never
in a reply, never in the ledger.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage

from sqlalchemy.orm import Session

from mailveil.contacts.customers import customer_address
from mailveil.policy.engine import Decision
from mailveil.relay import codes, compose
from mailveil.relay.codes import Reply
from mailveil.relay.content_rules import (
    PolicyRefusal,
    check_content,
    contact_reason,
    decide_message,
    referenced_ids,
)
from mailveil.relay.context import RelayContext
from mailveil.relay.decision import Deliver, Refuse, RelayDecision, refusal_event
from mailveil.relay.errors import DuplicateFrom, MissingFrom, RelayRefusal
from mailveil.relay.identity import Sender, check_sender_of, is_address_of
from mailveil.relay.lifecycle import seller_gate
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER, DIRECTION_TO_PRINCIPAL, thread_exists
from mailveil.relay.parse import header_text, parse_message
from mailveil.relay.rewrite import new_message_id, rewrite_customer_to_principal
from mailveil.relay.routes import Route
from mailveil.relay.sender_auth import (
    customer_sender_ok,
    parse_mailbox,
    sender_matches_principal,
)
from mailveil.relay.strangers import Stranger, stranger_decision
from mailveil.relay.trackers import strip_for_customer as strip_trackers

log = logging.getLogger("mailveil.relay")


def decide(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    raw: bytes,
    *,
    contact: Decision | None = None,
    stranger: bool = False,
    scanned: bool = False,
) -> RelayDecision:
    """The relay's decision for ``raw`` to ``route`` (module docstring). ``contact``: the
    contact policy's decision if RCPT made it; ``stranger``: the client authenticated as
    another principal (decided at RCPT), so its From proves nothing; ``scanned``: ``raw``
    already passed ``prescan`` with ``ctx.limits`` (``parse.parse_message``)."""
    if route.direction != DIRECTION_TO_CUSTOMER:
        return _to_principal(session, ctx, route, sender, raw, scanned=scanned)
    found = _to_customer(
        session, ctx, route, sender, raw, contact=contact, stranger=stranger, scanned=scanned
    )
    if isinstance(found, Stranger):
        return stranger_decision(session, ctx, route, sender, raw, found)
    return found


def header_from_address(message: EmailMessage) -> str:
    """The one From mailbox (lowercased); MissingFrom / DuplicateFrom otherwise."""
    values = [str(v) for k, v in message.raw_items() if k.lower() == "from"]
    if not values:
        raise MissingFrom("no From header field")
    if len(values) > 1:
        raise DuplicateFrom(f"{len(values)} From header fields")
    parsed = parse_mailbox(header_text(values[0]))
    return parsed[0] if parsed else ""


def _to_customer(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    raw: bytes,
    *,
    contact: Decision | None,
    stranger: bool,
    scanned: bool = False,
) -> RelayDecision | Stranger:
    settings = ctx.settings
    domain = settings.relay_domain
    verified = sender.principal_id == route.principal_id and not stranger
    actor = route.principal_ref if verified else None

    def refused(
        reply: Reply, why: str, reason: str | None = None, policies: tuple[str, ...] = ()
    ) -> Refuse:
        event = refusal_event(
            route, reply, actor=actor, stage="data", why=why, relay_domain=domain, reason=reason
        )
        if policies:  # which Cedar policies decided (an operator's own rule is named too)
            event.detail["policies"] = list(policies)
        return Refuse(reply, event)

    try:
        message = parse_message(raw, ctx.limits, scanned=scanned)
        header_from = header_from_address(message)
    except RelayRefusal as exc:
        return refused(exc.reply, str(exc))
    if stranger:
        return Stranger(message, header_from, check_sender_of(ctx, sender, raw, route.alias))
    if not verified:
        auth = check_sender_of(ctx, sender, raw, route.alias)
        attrs = route.principal.attributes or {}
        if not sender_matches_principal(
            auth,
            sending_addresses=list(attrs.get("sending_addresses") or []),
            sending_domains=list(attrs.get("sending_domains") or []),
            envelope_from=sender.mail_from,
            header_from=header_from,
        ):
            if auth.temporary_failure:
                return Refuse(codes.SENDER_AUTH_TEMPORARY)
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
    try:
        out = compose.to_customer(
            session, ctx, route, sender, message, header_from, actor=actor, reason=reason
        )
    except RelayRefusal as exc:
        return refused(exc.reply, str(exc), reason)
    if trackers is not None:
        out.event.detail["trackers"] = trackers
    return Deliver(out)


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


def is_customers(ctx: RelayContext, route: Route, address: str) -> bool:
    """Is ``address`` the route's customer's own (by blind index, nothing decrypted)?"""
    return is_address_of(ctx, bytes(route.customer.address_bidx), address)


def _to_principal(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    raw: bytes,
    *,
    scanned: bool = False,
) -> RelayDecision:
    domain = ctx.settings.relay_domain

    def refused(reply: Reply, why: str) -> Refuse:
        return Refuse(
            reply,
            refusal_event(route, reply, actor=None, stage="data", why=why, relay_domain=domain),
        )

    gate = customer_gate(route)
    if gate is not None:
        return refused(gate, "alias revoked, recipient unavailable or customer deleted")
    try:
        message = parse_message(raw, ctx.limits, scanned=scanned)
        header_from = header_from_address(message)
    except RelayRefusal as exc:
        return refused(exc.reply, str(exc))
    real = customer_address(session, ctx.runtime.vault, route.customer)
    auth = check_sender_of(ctx, sender, raw)
    from_is_customer = bool(header_from) and is_customers(ctx, route, header_from)
    if not (from_is_customer and customer_sender_ok(auth, real.rpartition("@")[2])):
        if auth.temporary_failure:
            return Refuse(codes.SENDER_AUTH_TEMPORARY)
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
    return Deliver(
        compose.signed(
            ctx,
            route,
            direction=DIRECTION_TO_PRINCIPAL,
            actor=route.customer_ref,
            reason=None,
            data=data,
            message_id=message_id,
            rcpt=rcpt,
        )
    )


__all__ = [
    "customer_gate",
    "decide",
    "header_from_address",
    "is_customers",
    "principal_gate",
]
