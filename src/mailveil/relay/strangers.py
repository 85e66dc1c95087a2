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
    with a warning prepended to every text part. The operator's content rules still apply.
    A message that cannot be delivered so (a revoked alias, a deleted, bouncing or canary
    customer, a content rule, a text part that cannot be read) is quarantined instead and
    the entry says why: never delivered without its warning, never dropped.

Mail to a canary's alias is always kept as evidence, never delivered (except ``refuse``).
"""

from __future__ import annotations

import email.errors
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message, MIMEPart
from typing import Any

from sqlalchemy.orm import Session

from mailveil.contacts.customers import customer_address
from mailveil.ledger.events import Event
from mailveil.relay import codes, quarantine
from mailveil.relay.codes import Reply
from mailveil.relay.content_rules import check_content
from mailveil.relay.context import RelayContext
from mailveil.relay.errors import MalformedMessage, RelayRefusal
from mailveil.relay.identity import Sender
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER
from mailveil.relay.pipeline import (
    Outgoing,
    Refused,
    Stranger,
    outgoing,
    stranger_event,
)
from mailveil.relay.relay_copy import relay_copy
from mailveil.relay.rewrite import new_message_id, rewrite_principal_to_customer
from mailveil.relay.routes import Route

ACTIONS = ("quarantine", "refuse", "banner")
BANNER = (
    "Warning: this message was sent to the address you gave {name}, but it was not sent "
    "by them. Do not reply with personal data or click links."
)
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class Held:
    """Quarantined: the reply, and the ledger entry to commit before giving it."""

    reply: Reply
    event: Event


@dataclass(frozen=True)
class Bannered:
    """To deliver with its warning: the message, and the stranger entry that goes with it."""

    outgoing: Outgoing
    event: Event


StrangerOutcome = Refused | Held | Bannered


def banner_name(route: Route, controller_name: str) -> str:
    """Whom the customer gave the address, as the customer knows them: a seller by its shop
    name; an employee only as the team of the marketplace (as the access log shows them,
    never a person's name); a notification service as the marketplace."""
    principal = route.principal
    if principal.kind == "employee":
        team = str((principal.attributes or {}).get("team") or "").strip()
        team = " ".join(team.split())[:64]
        return f"the {team} team of {controller_name}" if team else controller_name
    if principal.kind == "service":
        return controller_name
    return principal.display_name or principal.external_id


def banner_text(route: Route, controller_name: str) -> str:
    return BANNER.format(name=banner_name(route, controller_name))


def _text_parts(message: Message) -> Iterator[Message]:
    """Inline text/plain and text/html parts, not those of attached messages."""
    stack: list[Message] = [message]
    while stack:
        part = stack.pop()
        maintype = part.get_content_maintype()
        if maintype == "multipart":
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(c for c in reversed(children) if isinstance(c, Message))
            continue
        if part.get_content_type() not in ("text/plain", "text/html"):
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename() is not None:
            continue
        yield part


def add_banner(message: EmailMessage, text: str) -> int:
    """Prepend ``text`` to every inline text part (HTML-escaped in HTML, after ``<body>``);
    a message without one gets a text part of its own first. Returns the parts changed.
    Raises ``MalformedMessage`` when a part cannot be read (then nothing is delivered)."""
    changed = 0
    try:
        for part in list(_text_parts(message)):
            if not isinstance(part, EmailMessage):
                raise MalformedMessage("unexpected part type")
            subtype = part.get_content_subtype()
            body = part.get_content()
            if subtype == "html":
                block = f'<p style="border:2px solid #b00;padding:8px">{html.escape(text)}</p>'
                match = _BODY_TAG.search(body)
                at = match.end() if match else 0
                body = body[:at] + block + "\n" + body[at:]
            else:
                body = f"{text}\n\n{body}"
            disposition = part.get_content_disposition()
            had_version = "MIME-Version" in part
            part.set_content(body, subtype=subtype, charset="utf-8", disposition=disposition)
            if part is not message and not had_version:
                del part["MIME-Version"]  # set_content adds one; it belongs on the top only
            changed += 1
        if not changed:
            banner = MIMEPart()
            banner.set_content(f"{text}\n")
            if not message.is_multipart() or message.get_content_subtype() != "mixed":
                message.make_mixed()
            payload = message.get_payload()
            assert isinstance(payload, list)
            payload.insert(0, banner)
            changed = 1
    except RelayRefusal:
        raise
    except (LookupError, ValueError, TypeError, AttributeError, email.errors.MessageError) as exc:
        raise MalformedMessage(f"warning could not be added: {type(exc).__name__}") from exc
    return changed


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


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().strip().rstrip(".") if "@" in address else ""


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
    relay_domain = ctx.settings.relay_domain.lower()
    check_content(ctx.messaging, message)
    add_banner(message, banner_text(route, ctx.settings.controller_name))
    hidden = {a: route.reverse_alias for a in route.principal_addresses()}
    # Every mailbox on the principal's domains and on the stranger's own (envelope and From):
    # a known principal's real address must not reach the customer through a stranger either.
    domains = list((route.principal.attributes or {}).get("sending_domains") or [])
    domains += [_domain(sender.mail_from), _domain(header_from)]
    domains = [d for d in dict.fromkeys(domains) if d and d != relay_domain]
    for address in (sender.mail_from, header_from):
        if address and "@" in address and _domain(address) != relay_domain:
            hidden[address.lower()] = route.reverse_alias
    message_id = new_message_id(ctx.settings.relay_domain)
    data = rewrite_principal_to_customer(
        message,
        reverse_alias=route.reverse_alias,
        redactions=hidden,
        relay_domain=ctx.settings.relay_domain,
        message_id=message_id,
        hidden_domains=domains,
    )
    rcpt = customer_address(session, ctx.runtime.vault, route.customer)
    out = outgoing(
        ctx,
        route,
        direction=DIRECTION_TO_CUSTOMER,
        actor=sender.actor,
        reason=None,
        data=data,
        message_id=message_id,
        rcpt=rcpt,
    )
    out.event.detail.update(stranger=True, banner=True)
    return out


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
) -> Held:
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
    return Held(codes.QUARANTINED, event)


def decide(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    raw: bytes,
    found: Stranger,
) -> StrangerOutcome:
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
        return Refused(reply, event)
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
                return Bannered(out, event)
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
    "BANNER",
    "Bannered",
    "Held",
    "StrangerOutcome",
    "add_banner",
    "banner_name",
    "banner_outgoing",
    "banner_text",
    "copy_facts",
    "decide",
    "hold",
    "refuse_at_rcpt",
    "undeliverable",
]
