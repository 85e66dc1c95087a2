"""An order's conversation lifecycle: which status it may move to, and how long the seller
may write to the customer in each status.

An alias for a seller lives as long as the order's relationship does. Each order status
opens a contact window that runs from when the order entered it (``Order.status_changed_at``;
``placed_at`` for rows older than that column): ``lifecycle_windows`` gives the days per
status, the ``delivered`` one being the return window. After it the conversation has ended
and the relay refuses the seller at RCPT (``relay.lifecycle``). The customer reopens it by
writing: a customer's message relayed to the seller opens the conversation again for
``lifecycle_reopen_days`` from that message.

Transitions follow the order's life; anything else is a ``Conflict`` naming the allowed
next statuses (``transition_order``). ``PATCH`` of the status (``update_order``) stays as it
was, for backends that mirror a status they already decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.config import Settings, SettingsError
from mailveil.contacts import validation as v
from mailveil.contacts.models import ORDER_STATUSES, Order
from mailveil.contacts.relationships import get_order
from mailveil.db.base import utcnow
from mailveil.errors import Conflict

# The order's life: where each status may go next. "closed" ends it (a return after closing
# is a new order or a support case).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "placed": ("paid", "shipped", "cancelled", "closed"),
    "paid": ("shipped", "cancelled", "closed"),
    "shipped": ("delivered", "returned", "closed"),
    "delivered": ("returned", "closed"),
    "returned": ("closed",),
    "cancelled": ("closed",),
    "closed": (),
}


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle settings, parsed once (``from_settings``)."""

    enabled: bool
    windows: dict[str, timedelta]
    reopen: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Lifecycle:
        return cls(
            enabled=settings.lifecycle_enabled,
            windows=parse_windows(settings.lifecycle_windows),
            reopen=timedelta(days=settings.lifecycle_reopen_days),
        )

    def window(self, status: str) -> timedelta:
        return self.windows.get(status, timedelta(0))


def parse_windows(text: str) -> dict[str, timedelta]:
    """``"placed=60, delivered=30"`` -> {status: window}; every status must be given."""
    out: dict[str, timedelta] = {}
    for clause in text.replace(";", ",").split(","):
        if not clause.strip():
            continue
        status, eq, days = clause.partition("=")
        status = status.strip().lower()
        if not eq or status not in ORDER_STATUSES:
            raise SettingsError(
                f"lifecycle_windows: {clause.strip()!r} must be 'status=days' with a status "
                f"among {', '.join(ORDER_STATUSES)}"
            )
        try:
            value = float(days)
        except ValueError:
            raise SettingsError(f"lifecycle_windows: {days.strip()!r} is not a number") from None
        if value < 0:
            raise SettingsError(f"lifecycle_windows: {status} must be >= 0 days")
        out[status] = timedelta(days=value)
    missing = [s for s in ORDER_STATUSES if s not in out]
    if missing:
        raise SettingsError(f"lifecycle_windows: no window for {', '.join(missing)}")
    return out


@dataclass(frozen=True)
class Conversation:
    """Where the seller's conversation with the customer stands for one order."""

    status: str
    entered_at: datetime
    window_ends: datetime
    reopened_until: datetime | None

    def open_at(self, now: datetime) -> bool:
        if now < self.window_ends:
            return True
        return self.reopened_until is not None and now < self.reopened_until

    @property
    def open_until(self) -> datetime:
        if self.reopened_until is not None and self.reopened_until > self.window_ends:
            return self.reopened_until
        return self.window_ends

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "status": self.status,
            "status_since": self.entered_at.isoformat(),
            "window_ends": self.window_ends.isoformat(),
            "reopened_until": self.reopened_until.isoformat() if self.reopened_until else None,
            "open": self.open_at(now),
            "open_until": self.open_until.isoformat(),
        }


def conversation(
    lifecycle: Lifecycle,
    status: str,
    entered_at: datetime,
    customer_wrote_at: datetime | None,
) -> Conversation:
    """The conversation for an order in ``status`` since ``entered_at``; the customer's
    latest message to the seller (if any) reopens it."""
    reopened = None
    if customer_wrote_at is not None:
        reopened = customer_wrote_at + lifecycle.reopen
    return Conversation(status, entered_at, entered_at + lifecycle.window(status), reopened)


def customer_wrote_at(session: Session, customer_id: int, seller_id: int) -> datetime | None:
    """When the customer last wrote to the seller through the relay (its own records)."""
    from mailveil.relay.messages import DIRECTION_TO_PRINCIPAL
    from mailveil.relay.models import RelayMessage

    return session.scalar(
        select(func.max(RelayMessage.created_at)).where(
            RelayMessage.customer_id == customer_id,
            RelayMessage.principal_id == seller_id,
            RelayMessage.direction == DIRECTION_TO_PRINCIPAL,
        )
    )


def order_conversation(session: Session, lifecycle: Lifecycle, order: Order) -> Conversation:
    entered = order.status_changed_at or order.placed_at
    wrote = customer_wrote_at(session, order.customer_id, order.seller_id)
    return conversation(lifecycle, order.status, entered, wrote)


def transition_order(
    session: Session, order_id: int, *, to: str, at: datetime | str | None = None
) -> Order:
    """Move the order to status ``to`` (``TRANSITIONS``); its contact window starts again."""
    target = v.choice(to, ORDER_STATUSES, "to")
    when = utcnow() if at is None else v.moment(at, "at")
    order = get_order(session, order_id)
    allowed = TRANSITIONS.get(order.status, ())
    if target not in allowed:
        nexts = ", ".join(allowed) or "none (the order is closed)"
        raise Conflict(
            f"order {order_id} is {order.status}; it cannot become {target} "
            f"(next statuses: {nexts})"
        )
    entered = order.status_changed_at or order.placed_at
    if when < entered:
        raise Conflict(f"order {order_id} entered {order.status} after the given time")
    order.status = target
    order.status_changed_at = when
    order.updated_at = utcnow()
    session.flush()
    return order


__all__ = [
    "TRANSITIONS",
    "Conversation",
    "Lifecycle",
    "conversation",
    "customer_wrote_at",
    "order_conversation",
    "parse_windows",
    "transition_order",
]
