"""Recipients' feedback on a send: one-click unsubscribes (RFC 8058) and complaints (ARF
reports at the abuse mailbox). Each becomes a suppression (the customer gets no more of the
kind) and a ``notify.unsubscribe`` / ``notify.complaint`` fact naming the send, which is
what the send's unsubscribe and complaint gates count (``worker.gate_rates``).

Every notification carries ``List-Unsubscribe: <https://<relay domain>/unsubscribe/<token>>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The token names (send,
customer) under an HMAC keyed from the relay's VERP key: it carries no address, cannot be
forged for another customer, and the relay keeps exactly these headers (its own endpoint)
while it drops every other ``List-*`` field a sender writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.errors import NotFound
from mailveil.keyfiles import KeyFileError
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.notify.models import Fact, Recipient, Send, Suppression, Template
from mailveil.notify.sends import send_ref

ONE_CLICK = "List-Unsubscribe=One-Click"
MAC_BYTES = 10


def unsubscribe_key(settings: Settings) -> bytes:
    """The token key: derived from the relay's VERP key (no key file of its own to lose)."""
    from mailveil.relay.messages import load_verp_key

    return hmac.new(load_verp_key(settings), b"mailveil list-unsubscribe v1", "sha256").digest()


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def unsubscribe_token(key: bytes, send_id: int, customer_id: int) -> str:
    body = struct.pack(">QQ", send_id, customer_id)
    mac = hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]
    return _b32(body + mac)


def read_unsubscribe_token(key: bytes, token: str) -> tuple[int, int] | None:
    """(send, customer) of a genuine token, else None."""
    if not 1 <= len(token) <= 64:
        return None
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (ValueError, TypeError):
        return None
    if len(raw) != 16 + MAC_BYTES:
        return None
    body, mac = raw[:16], raw[16:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]):
        return None
    send_id, customer_id = struct.unpack(">QQ", body)
    return send_id, customer_id


def unsubscribe_url(settings: Settings, key: bytes, send_id: int, customer_id: int) -> str:
    token = unsubscribe_token(key, send_id, customer_id)
    return f"https://{settings.relay_domain}/unsubscribe/{token}"


def scope_of(template: Template) -> str:
    """What the customer leaves: the template's suppression list, else its category."""
    return f"list:{template.suppression_list}" if template.suppression_list else (
        f"category:{template.category}"
    )  # fmt: skip


def _insert_ignore(session: Session, model: Any, values: dict[str, Any]) -> bool:
    make = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    done = session.execute(make(model).values(**values).on_conflict_do_nothing())
    return getattr(done, "rowcount", 0) == 1


def _feedback(
    session: Session,
    ledger: Ledger,
    send: Send,
    customer_id: int,
    kind: str,
    extra: dict[str, Any],
) -> str:
    template = session.get(Template, send.template_id)
    assert template is not None
    scope = scope_of(template)
    now = utcnow()
    _insert_ignore(session, Suppression, {"scope": scope, "customer_id": customer_id,
                                          "created_at": now})  # fmt: skip
    new = _insert_ignore(session, Fact, {
        "fact_id": f"{kind}:{send.id}:{customer_id}", "kind": f"notify.{kind}",
        "customer_id": customer_id, "occurred_at": now, "created_at": now,
        "attributes": {"send": send.id, **extra},
    })  # fmt: skip
    if new:  # once per (send, customer), however often the link is followed
        detail = {"send": send.id, "scope": scope, **extra}
        ledger.append(session, [Event(f"notify_{kind}", f"customer:{customer_id}",
                                      f"customer:{customer_id}", None, "notification",
                                      send_ref(send.id), detail)])  # fmt: skip
    session.flush()
    return scope


def record_unsubscribe(
    session: Session, settings: Settings, ledger: Ledger, token: str
) -> dict[str, Any]:
    """A one-click unsubscribe. NotFound for a token that is not genuine or names a send
    that did not go to that customer. Does not commit."""
    try:
        key = unsubscribe_key(settings)
    except KeyFileError:
        # No relay key: no notification with an unsubscribe link was ever sent from here.
        raise NotFound("no such unsubscribe link") from None
    found = read_unsubscribe_token(key, token)
    if found is None:
        raise NotFound("no such unsubscribe link")
    send_id, customer_id = found
    send = session.get(Send, send_id)
    got = session.scalar(select(Recipient.id).where(
        Recipient.send_id == send_id, Recipient.customer_id == customer_id))  # fmt: skip
    if send is None or got is None:
        raise NotFound("no such unsubscribe link")
    scope = _feedback(session, ledger, send, customer_id, "unsubscribe", {})
    return {"send": send_id, "scope": scope}


def _in_flight(session: Session, relay_token: str) -> Any:
    """The recipient a relayed message was for when the worker has not recorded its token
    yet (a complaint can arrive while the rest of the group is still being sent): the
    service's latest attempt to that customer begun before the relay wrote the message."""
    from mailveil.notify.settle import MATCH_SLACK
    from mailveil.relay.models import RelayMessage

    message = session.execute(
        select(RelayMessage.principal_id, RelayMessage.customer_id, RelayMessage.created_at).where(
            RelayMessage.token == relay_token
        )
    ).first()
    if message is None:
        return None
    return session.execute(
        select(Recipient.send_id, Recipient.customer_id)
        .join(Send, Send.id == Recipient.send_id)
        .join(Template, Template.id == Send.template_id)
        .where(
            Template.owner_id == message.principal_id,
            Recipient.customer_id == message.customer_id,
            Recipient.state.in_(("delivering", "delivered", "unconfirmed")),
            Recipient.attempt_at <= message.created_at + MATCH_SLACK,
        )
        .order_by(Recipient.attempt_at.desc())
        .limit(1)
    ).first()


def record_complaint(session: Session, ledger: Ledger, relay_token: str, report: int) -> int | None:
    """A complaint (an abuse report naming a relayed message) about a notification: the send
    it belongs to, or None when the message was not a notification. Does not commit."""
    row = session.execute(
        select(Recipient.send_id, Recipient.customer_id).where(Recipient.relay_token == relay_token)
    ).first()
    if row is None:
        row = _in_flight(session, relay_token)
    if row is None:
        return None
    send = session.get(Send, row.send_id)
    if send is None:
        return None
    _feedback(session, ledger, send, row.customer_id, "complaint", {"report": report})
    return send.id


__all__ = [
    "ONE_CLICK",
    "read_unsubscribe_token",
    "record_complaint",
    "record_unsubscribe",
    "scope_of",
    "unsubscribe_key",
    "unsubscribe_token",
    "unsubscribe_url",
]
