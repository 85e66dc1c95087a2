"""The marketplace's veto hook: allow, hold or refuse a seller's message before the relay
accepts it, failing closed.

When ``veto_url`` is set, every principal -> customer message that passed the relay's own
checks is described to the hook at the end of DATA -- who sent it (principal id, kind,
external id), to which customer (id and external id), the contact reason, the order's status,
sizes, a summary of its links (count and hosts) and attachments (count, media types, sizes);
never an address, a subject or a body -- in a JSON POST signed with HMAC-SHA256
(``X-Mailveil-Signature: t=<unix time>,v1=<hex of HMAC(secret, "<t>.<body>")>``). The hook
answers ``{"decision": "allow" | "hold" | "refuse"}``:

- allow: the relay delivers as usual;
- refuse: ``VETO_REFUSED`` (550 5.7.1), ledgered as a ``message_refused`` at stage ``veto``;
- hold: the message is kept in the quarantine (``VETO_HELD``, 250 2.7.0), ledgered as
  ``message_held`` with its sha256 and size.

Anything else holds it (fails closed): no answer within ``veto_timeout_seconds`` (the whole
exchange, connecting included), a connection error, a status other than 200 (a redirect is
not followed), more than ``MAX_ANSWER`` bytes, or a body that is not that JSON. Twilio
Proxy's intercept callback fails open; a marketplace that registers a veto means it.

One ``httpx.AsyncClient`` per relay process keeps connections to the hook alive (a
handshake per message would cost more than the hook's answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Order
from mailveil.ledger.events import Event
from mailveil.logs import scrub
from mailveil.relay import codes, quarantine
from mailveil.relay.compose import Outgoing
from mailveil.relay.content_rules import external_links
from mailveil.relay.decision import Deliver, Hold, Refuse, RelayDecision, refusal_event, reply_text
from mailveil.relay.routes import Route

log = logging.getLogger("mailveil.relay")

KIND_HELD = "message_held"
DECISIONS = ("allow", "hold", "refuse")
MAX_ANSWER = 4096  # bytes of the hook's answer read; more is garbage
MAX_LISTED = 20  # hosts and attachments listed in the metadata
SIGNATURE_HEADER = "X-Mailveil-Signature"
# Connections to the hook kept open: one per concurrent message, reused across messages.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=32)


def sign(secret: str, body: bytes, *, now: int | None = None) -> str:
    """The signature header's value for ``body`` (Stripe's scheme: replay-bounded by t)."""
    stamp = int(time.time()) if now is None else now
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300.0) -> bool:
    """What a receiver checks (used by the tests' receivers; documented for marketplaces)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - stamp) > tolerance:
        return False
    expected = sign(secret, body, now=stamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class Verdict:
    decision: str  # allow, hold or refuse
    why: str  # the hook's own short reason, or what went wrong (type names only)
    seconds: float


def _parts(message: Message) -> Iterator[tuple[Message, str]]:
    for part in message.walk():
        ctype = part.get_content_type()
        if not ctype.startswith("multipart/"):
            yield part, ctype


def summary(data: bytes, relay_domain: str) -> dict[str, Any]:
    """Sizes, links and attachments of the message as it would be delivered. The relay made
    and checked these bytes itself (limits, nesting), so the fast compat32 parser reads them:
    the modern one costs twenty times as much, on every message."""
    message = message_from_bytes(data, policy=compat32)
    hosts: dict[str, int] = {}
    attachments: list[dict[str, Any]] = []
    text_parts = 0
    html = False
    for part, ctype in _parts(message):
        payload = part.get_payload(decode=True)
        body = payload if isinstance(payload, bytes) else b""
        is_text = ctype.startswith("text/") and part.get_content_disposition() != "attachment"
        if is_text and part.get_filename() is None:
            text_parts += 1
            html = html or ctype == "text/html"
            charset = part.get_content_charset() or "utf-8"
            try:
                text = body.decode(charset, "replace")
            except LookupError:
                text = body.decode("latin-1")
            for host in external_links(text, frozenset({relay_domain})):
                hosts[host] = hosts.get(host, 0) + 1
        else:
            attachments.append({"type": ctype, "size": len(body)})
    return {
        "size": len(data),
        "text_parts": text_parts,
        "html": html,
        "links": {"count": sum(hosts.values()), "hosts": sorted(hosts)[:MAX_LISTED]},
        "attachments": {
            "count": len(attachments),
            "bytes": sum(a["size"] for a in attachments),
            "items": attachments[:MAX_LISTED],
        },
    }


def metadata(session: Session, route: Route, out: Outgoing, relay_domain: str) -> dict[str, Any]:
    """What the hook sees about one message (module docstring): ids, never addresses."""
    order = session.execute(
        select(Order.id, Order.external_id, Order.status)
        .where(Order.customer_id == route.customer_id, Order.seller_id == route.principal_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(1)
    ).first()
    return {
        "message": out.token,
        "direction": out.row["direction"],
        "principal": {
            "id": route.principal_id,
            "kind": route.principal.kind,
            "external_id": route.principal.external_id,
        },
        "customer": {"id": route.customer_id, "external_id": route.customer.external_id},
        "reason": out.row["reason"],
        "order": (
            None
            if order is None
            else {"id": order.id, "external_id": order.external_id, "status": order.status}
        ),
        **summary(out.data, relay_domain),
    }


class VetoHook:
    """The hook's client, one per relay process (``enabled`` False without ``veto_url``)."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None):
        self.url = settings.veto_url
        self.secret = settings.platform_webhook_secret
        self.timeout = settings.veto_timeout_seconds
        self.relay_domain = settings.relay_domain.lower()
        self.data_dir = settings.data_dir
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                limits=LIMITS,
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment between relay and hook
                transport=self._transport
                or httpx.AsyncHTTPTransport(
                    # Headers and body are separate writes: without NODELAY the body can wait
                    # for the hook's delayed ACK (tens of ms) on every message.
                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                    limits=LIMITS,
                ),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ask(self, meta: dict[str, Any]) -> Verdict:
        """The hook's decision, or ``hold`` with what went wrong; never longer than timeout."""
        started = time.perf_counter()
        body = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            "User-Agent": "mailveil-veto/1",
        }

        def held(why: str) -> Verdict:
            return Verdict("hold", why, time.perf_counter() - started)

        client = self._http()  # made outside the time limit: it loads the TLS trust store
        try:
            async with asyncio.timeout(self.timeout):
                status, answer = await self._post(client, body, headers)
        except TimeoutError:
            return held("timeout")
        except Exception as exc:  # httpx's errors, a malformed URL, anything: fail closed
            return held(f"error: {type(exc).__name__}")
        if status != 200:
            return held(f"status {status}")
        if answer is None:
            return held("answer too long")
        decision, why = _decision(answer)
        if decision is None:
            return held("answer not understood")
        return Verdict(decision, why, time.perf_counter() - started)

    async def _post(
        self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes | None]:
        async with client.stream("POST", self.url, content=body, headers=headers) as response:
            if response.status_code != 200:
                return response.status_code, b""
            data = b""
            async for chunk in response.aiter_raw():
                data += chunk
                if len(data) > MAX_ANSWER:
                    return 200, None
            return 200, data

    def verdict_outcome(
        self, verdict: Verdict, route: Route, out: Outgoing, raw: bytes
    ) -> RelayDecision:
        """What the relay does with the message after the hook (blocking: files, hashing)."""
        if verdict.decision == "allow":
            out.event.detail["veto"] = "allow"
            return Deliver(out)
        if verdict.decision == "refuse":
            event = refusal_event(
                route,
                codes.VETO_REFUSED,
                actor=route.principal_ref,
                stage="veto",
                why=f"the marketplace refused it: {verdict.why}",
                relay_domain=self.relay_domain,
                reason=out.row["reason"],
            )
            return Refuse(codes.VETO_REFUSED, event)
        kept = quarantine.store(self.data_dir, raw)
        event = Event(
            kind=KIND_HELD,
            actor=route.principal_ref,
            subject=route.customer_ref,
            alias=route.alias,
            purpose=route.direction,
            ref=out.row["reason"],
            detail={
                "principal": route.principal_ref,
                "reply": reply_text(codes.VETO_HELD),
                "action": "quarantine",
                "by": "veto",
                "why": scrub(verdict.why, self.relay_domain)[:200],
                "sha256": kept.sha256,
                "size": kept.size,
            },
        )
        return Hold(codes.VETO_HELD, event)


def _decision(answer: bytes) -> tuple[str | None, str]:
    try:
        doc = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return None, ""
    if not isinstance(doc, dict) or doc.get("decision") not in DECISIONS:
        return None, ""
    why = doc.get("reason")
    # The hook's reason is the marketplace's words: kept short, printable, in the ledger only.
    text = "".join(c for c in why if c.isprintable())[:200] if isinstance(why, str) else ""
    return str(doc["decision"]), text


__all__ = [
    "DECISIONS",
    "KIND_HELD",
    "MAX_ANSWER",
    "SIGNATURE_HEADER",
    "Verdict",
    "VetoHook",
    "metadata",
    "sign",
    "summary",
    "verify",
]
