"""The relay's side of conversation lifecycles (``contacts.lifecycle``) and the flood cap.

A seller's message to a customer whose latest order's conversation has ended is refused
with ``CONVERSATION_ENDED`` -- at RCPT for an authenticated seller, at DATA for one SPF/DKIM
vouched for. It is decided before anything else about the alias (revoked, customer deleted,
bouncing, opted out), so every expired alias gets the same reply, in the same words, whatever
became of its customer: probing expired aliases in bulk tells nothing. The facts come with
the RCPT lookup (``routes``): the order's status and since when, the customer's latest
message to the seller (which reopens the conversation), the seller's messages to the
customer in the last 24 hours (``lifecycle_flood_limit``: ``TOO_MANY_TO_CUSTOMER``, a 4xx,
so the seller's server retries later and nothing is lost).
"""

from __future__ import annotations

from datetime import datetime

from mailveil.config import Settings
from mailveil.contacts.lifecycle import Lifecycle, conversation
from mailveil.db.base import utcnow
from mailveil.relay import codes
from mailveil.relay.codes import Reply
from mailveil.relay.routes import Route

ENDED_WHY = "the order's conversation has ended"


_LIFECYCLES: dict[int, tuple[Settings, Lifecycle]] = {}


def lifecycle_for(settings: Settings) -> Lifecycle:
    """Parsed once per settings object, found by its identity: a cache keyed by the frozen
    settings hashed every one of their fields on each call, twice per message (RCPT and
    DATA). The settings are held with their lifecycle, so an id is never reused meanwhile."""
    found = _LIFECYCLES.get(id(settings))
    if found is None or found[0] is not settings:
        found = _LIFECYCLES[id(settings)] = (settings, Lifecycle.from_settings(settings))
    return found[1]


def seller_gate(
    settings: Settings, route: Route, *, now: datetime | None = None
) -> tuple[Reply, str] | None:
    """(reply, why) when a seller may not write to this customer now, else None."""
    if route.principal.kind != "seller":
        return None
    lifecycle = lifecycle_for(settings)
    if lifecycle.enabled and route.order_status is not None and route.order_status_at is not None:
        talk = conversation(
            lifecycle, route.order_status, route.order_status_at, route.customer_wrote_at
        )
        if not talk.open_at(now or utcnow()):
            return codes.CONVERSATION_ENDED, ENDED_WHY
    limit = settings.lifecycle_flood_limit
    if limit and route.recent_to_customer >= limit:
        why = f"{route.recent_to_customer} messages to this customer in 24 hours (cap {limit})"
        return codes.TOO_MANY_TO_CUSTOMER, why
    return None


__all__ = ["ENDED_WHY", "lifecycle_for", "seller_gate"]
