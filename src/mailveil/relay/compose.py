"""What the relay hands the smarthost: a message rewritten for its recipient, signed, addressed.

``Outgoing`` is one message ready to go: the VERP envelope sender, the recipient's real
address (kept out of ``repr``), the DKIM-signed bytes, its relay_messages row and its
``message`` ledger event. ``to_customer`` is the one way a message reaches a customer: the
alias's principal's own (plain) or a stranger's (``banner``: a warning prepended to every
text part, ``relay.strangers`` decides when). Both are rewritten the same way: From becomes
the principal's reverse alias and the principal's real addresses (and the sender's own) are
redacted (``relay.rewrite``). ``signed`` finishes both directions.
"""

from __future__ import annotations

import email.errors
import hashlib
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message, MIMEPart
from typing import Any

from sqlalchemy.orm import Session

from mailveil.contacts.customers import customer_address
from mailveil.db.base import utcnow
from mailveil.ledger.events import Event
from mailveil.relay.context import RelayContext
from mailveil.relay.errors import MalformedMessage, RelayRefusal
from mailveil.relay.identity import Sender
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER, new_token, verp_address
from mailveil.relay.rewrite import new_message_id, rewrite_principal_to_customer
from mailveil.relay.routes import Route

KIND_MESSAGE = "message"
BANNER = (
    "Warning: this message was sent to the address you gave {name}, but it was not sent "
    "by them. Do not reply with personal data or click links."
)
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class Outgoing:
    token: str
    mail_from: str  # the VERP address
    rcpt: str = field(repr=False)  # the other side's real address
    data: bytes = field(repr=False)
    row: dict[str, Any] = field(repr=False)
    event: Event = field(repr=False)


def signed(
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
    """``data`` DKIM-signed, with a new token, its VERP sender, row and ``message`` event."""
    data = ctx.dkim.sign(data)
    digest = hashlib.sha256(data).hexdigest()
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
        "size": len(data),
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
            "size": len(data),
            "sha256": digest,
            "relay_message": token,
        },
    )
    return Outgoing(
        token=token,
        mail_from=verp_address(ctx.verp_key, token, ctx.settings.relay_domain),
        rcpt=rcpt,
        data=data,
        row=row,
        event=event,
    )


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().strip().rstrip(".") if "@" in address else ""


def _on_relay_domain(address: str, relay_domain: str) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return domain == relay_domain or domain.endswith("." + relay_domain)


def to_customer(
    session: Session,
    ctx: RelayContext,
    route: Route,
    sender: Sender,
    message: EmailMessage,
    header_from: str,
    *,
    actor: str | None,
    reason: str | None,
    banner: bool = False,
) -> Outgoing:
    """``message`` as the customer receives it from the alias's principal: From its reverse
    alias, the principal's real addresses (and the sender's envelope and From) redacted,
    signed. ``banner``: a stranger's message, with its warning first; then the stranger's
    own domains are hidden too, and only the relay domain itself is exempt from redaction
    (a known principal's real address must not reach the customer through a stranger).
    Raises ``RelayRefusal`` (a part that cannot take the warning, a message that cannot be
    rewritten)."""
    settings = ctx.settings
    relay_domain = settings.relay_domain
    if banner:
        add_banner(message, banner_text(route, settings.controller_name))
    hidden = {a: route.reverse_alias for a in route.principal_addresses()}
    # Every mailbox on the principal's domains is its own, not only the ones it registered.
    domains = list((route.principal.attributes or {}).get("sending_domains") or [])
    if banner:
        lowered = relay_domain.lower()
        domains += [_domain(sender.mail_from), _domain(header_from)]
        domains = [d for d in dict.fromkeys(domains) if d and d != lowered]
        own = [a for a in (sender.mail_from, header_from) if a and _domain(a) != lowered]
    else:
        own = [
            a
            for a in (sender.mail_from, header_from)
            if a and not _on_relay_domain(a, relay_domain)
        ]
    for address in own:
        if "@" in address:
            hidden[address.lower()] = route.reverse_alias
    message_id = new_message_id(relay_domain)
    data = rewrite_principal_to_customer(
        message,
        reverse_alias=route.reverse_alias,
        redactions=hidden,
        relay_domain=relay_domain,
        message_id=message_id,
        hidden_domains=domains,
    )
    out = signed(
        ctx,
        route,
        direction=DIRECTION_TO_CUSTOMER,
        actor=actor,
        reason=reason,
        data=data,
        message_id=message_id,
        rcpt=customer_address(session, ctx.runtime.vault, route.customer),
    )
    if banner:
        out.event.detail.update(stranger=True, banner=True)
    return out


# ------------------------------------------------------------------------------ the warning


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


__all__ = [
    "BANNER",
    "KIND_MESSAGE",
    "Outgoing",
    "add_banner",
    "banner_name",
    "banner_text",
    "signed",
    "to_customer",
]
