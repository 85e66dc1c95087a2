"""Message types by order state: which contact reasons a seller may use on an order now, and
why -- the same decisions the relay makes (the contact policy and ``messages.cedar`` in the
runtime's policy engine, and the conversation's lifecycle), so seller tools offer only those.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.lifecycle import order_conversation
from mailveil.contacts.models import Order
from mailveil.contacts.relationships import get_order
from mailveil.db.base import utcnow
from mailveil.policy.engine import PolicyEngine
from mailveil.policy.facts import policy_input
from mailveil.relay.content_rules import MessagingPolicy, message_input
from mailveil.relay.lifecycle import lifecycle_for

ENDED = "the conversation has ended; it reopens when the customer writes"


@functools.cache
def messaging_for(settings: Settings) -> MessagingPolicy:
    return MessagingPolicy.from_settings(settings)


def order_reasons(
    session: Session,
    settings: Settings,
    engine: PolicyEngine,
    order: Order | int,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Each reason the operator lists, allowed or not for this order's seller now, and why."""
    if isinstance(order, int):
        order = get_order(session, order)
    now = now or utcnow()
    messaging = messaging_for(settings)
    lifecycle = lifecycle_for(settings)
    talk = order_conversation(session, lifecycle, order)
    latest = session.scalar(
        select(Order.id)
        .where(Order.customer_id == order.customer_id, Order.seller_id == order.seller_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(1)
    )
    contact_in = policy_input(session, settings, order.customer_id, order.seller_id, "order")
    contact = engine.decide(contact_in)
    open_now = talk.open_at(now) or not lifecycle.enabled
    inputs = [
        message_input(messaging, contact_in, reason=r, order_status=order.status, in_thread=False)
        for r in sorted(messaging.known_reasons)
    ]
    decisions = engine.decide_many(inputs) if inputs else []
    reasons = []
    for reason, decision in zip(sorted(messaging.known_reasons), decisions, strict=True):
        allowed = open_now and contact.allowed and decision.allowed
        if not open_now:
            why = ENDED
        elif not contact.allowed:
            why = contact.reason
        else:
            why = decision.reason
        reasons.append(
            {
                "reason": reason,
                "allowed": allowed,
                "critical": reason in messaging.critical_reasons,
                "why": why,
            }
        )
    return {
        "order_id": order.id,
        "external_id": order.external_id,
        "seller_id": order.seller_id,
        "customer_id": order.customer_id,
        "status": order.status,
        # The relay decides on the pair's latest order; an older order's reasons are shown
        # for what they would be, marked as not the one the relay uses.
        "latest_order": latest == order.id,
        "conversation": talk.view(now) | {"enforced": lifecycle.enabled},
        "contact": {"allowed": contact.allowed, "why": contact.reason},
        "reasons": reasons,
        "allowed": [r["reason"] for r in reasons if r["allowed"]],
    }


__all__ = ["ENDED", "messaging_for", "order_reasons"]
