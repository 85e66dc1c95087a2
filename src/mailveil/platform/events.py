"""Message events for the marketplace's backend: an export (NDJSON, by cursor) and a signed
webhook, both read from the ledger.

The ledger already records every message the relay handled, in order, committed before the
SMTP client got its answer; it is the outbox. An event is a ledger entry of one of these
kinds, shaped for the marketplace (ids and codes, never an address or the alias):

=================  ==============================================================
event              ledger entries
=================  ==============================================================
relayed            ``message`` (accepted and handed on)
refused            ``message_refused``; ``stranger_at_alias`` that was refused
bounced            ``message_rejected`` (the next hop said 5xx), ``bounce`` (a DSN)
complained         ``abuse_report`` (reports to the abuse mailbox naming a principal)
held               ``message_held`` (veto hook), ``stranger_at_alias`` quarantined
=================  ==============================================================

The cursor is the ledger sequence number: ``after=<cursor>`` continues an export, and the
webhook keeps its own (``event_deliveries``): a batch is POSTed (signed like the veto hook,
``relay.veto.sign``) and the cursor moves only when the receiver answered 2xx; otherwise
the next attempt waits twice as long (up to ``MAX_BACKOFF``). Delivery is at least once:
receivers deduplicate by ``cursor``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.errors import InvalidInput
from mailveil.ledger.models import LedgerEntry, from_time_us
from mailveil.platform.models import EventDelivery
from mailveil.relay.veto import SIGNATURE_HEADER, sign

EVENTS = ("relayed", "refused", "bounced", "complained", "held")
KINDS = (
    "message",
    "message_refused",
    "stranger_at_alias",
    "message_rejected",
    "bounce",
    "abuse_report",
    "message_held",
)
MAX_BACKOFF = timedelta(hours=1)
WEBHOOK = "webhook"


def _event_name(entry: LedgerEntry, detail: dict[str, Any]) -> str | None:
    kind = entry.kind
    if kind == "message":
        return "relayed"
    if kind == "message_refused":
        return "refused"
    if kind in ("message_rejected", "bounce"):
        if kind == "bounce" and detail.get("kind") not in ("hard", "soft"):
            return None  # delays, success reports, autoreplies: not a bounce
        return "bounced"
    if kind == "abuse_report":
        return "complained"
    if kind == "message_held":
        return "held"
    if kind == "stranger_at_alias":
        return (
            "held"
            if detail.get("action") == "quarantine"
            else ("refused" if detail.get("action") == "refuse" else None)
        )
    return None


def _ref(value: Any, prefix: str) -> int | None:
    if isinstance(value, str) and value.startswith(prefix + ":"):
        tail = value.split(":", 1)[1]
        return int(tail) if tail.isdigit() else None
    return None


def shape(entry: LedgerEntry) -> dict[str, Any] | None:
    """The event for one ledger entry, or None if it is not one of ``EVENTS``."""
    try:
        detail = json.loads(entry.detail)
    except ValueError:
        detail = {}
    name = _event_name(entry, detail)
    if name is None:
        return None
    principal = _ref(detail.get("principal"), "principal") or _ref(entry.actor, "principal")
    return {
        "cursor": entry.seq,
        "event": name,
        "time": from_time_us(entry.time_us).isoformat(),
        "message": detail.get("relay_message"),
        "direction": entry.purpose if entry.purpose in ("to_customer", "to_principal") else None,
        "principal_id": principal,
        "customer_id": _ref(entry.subject, "customer"),
        "reason": entry.ref,
        "reply": detail.get("reply"),
        "stage": detail.get("stage"),
    }


def events_after(session: Session, after: int = -1, limit: int = 100) -> list[dict[str, Any]]:
    """Up to ``limit`` events with a cursor above ``after``, oldest first."""
    if limit < 1:
        raise InvalidInput("limit must be >= 1")
    out: list[dict[str, Any]] = []
    cursor = after
    while len(out) < limit:
        rows = list(
            session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.seq > cursor, LedgerEntry.kind.in_(KINDS))
                .order_by(LedgerEntry.seq)
                .limit(limit)
            )
        )
        if not rows:
            break
        for entry in rows:
            shaped = shape(entry)
            if shaped is not None and len(out) < limit:
                out.append(shaped)
        cursor = rows[-1].seq
        if len(rows) < limit:
            break
    return out


def ndjson(events: list[dict[str, Any]]) -> Iterator[bytes]:
    for item in events:
        yield json.dumps(item, sort_keys=True, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class Push:
    sent: int  # events the receiver took
    cursor: int
    error: str | None = None
    waiting: bool = False  # backing off: nothing tried


def _state(session: Session) -> EventDelivery:
    row = session.get(EventDelivery, WEBHOOK)
    if row is None:
        row = EventDelivery(name=WEBHOOK, cursor=-1, attempts=0, updated_at=utcnow())
        session.add(row)
        session.flush()
    return row


def push_once(
    session: Session,
    settings: Settings,
    client: httpx.Client,
    *,
    now: datetime | None = None,
) -> Push:
    """POST the next batch to ``events_url``; move the cursor only on a 2xx. The caller
    commits. A failure doubles the wait before the next attempt."""
    now = now or utcnow()
    state = _state(session)
    if state.next_attempt_at is not None and now < state.next_attempt_at:
        return Push(0, state.cursor, state.last_error, waiting=True)
    batch = events_after(session, state.cursor, settings.events_batch_size)
    if not batch:
        return Push(0, state.cursor)
    body = json.dumps({"events": batch}, sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(settings.platform_webhook_secret, body),
        "User-Agent": "mailveil-events/1",
    }
    error: str | None = None
    try:
        response = client.post(settings.events_url, content=body, headers=headers)
        if not 200 <= response.status_code < 300:
            error = f"status {response.status_code}"
    except httpx.HTTPError as exc:
        error = f"error: {type(exc).__name__}"
    state.updated_at = now
    if error is None:
        state.cursor = batch[-1]["cursor"]
        state.attempts = 0
        state.next_attempt_at = None
        state.last_error = None
        session.flush()
        return Push(len(batch), state.cursor)
    state.attempts += 1
    state.last_error = error
    state.next_attempt_at = now + min(timedelta(seconds=2**state.attempts), MAX_BACKOFF)
    session.flush()
    return Push(0, state.cursor, error)


def webhook_client(settings: Settings) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(settings.events_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
    )


__all__ = [
    "EVENTS",
    "KINDS",
    "EventDelivery",
    "Push",
    "events_after",
    "ndjson",
    "push_once",
    "shape",
    "webhook_client",
]
