"""Where a recipient address leads: one query at RCPT for everything the relay decides on.

A local part on the relay domain is either an alias (a principal writes to a customer), a
reverse alias (a customer writes to a principal) or a VERP bounce address (checked without
the database, ``messages.verify_bounce_local``). ``lookup_route`` answers the first two with a
single SELECT joining the alias, its customer and its principal, with the status and time of
the pair's latest order and whether an open support case of the customer is assigned to the
principal as scalar subqueries (both served by the indexes the disclosure rules use). The
relay's journal runs it for all the recipients queued at once (``lookup_routes``, an IN
list) in the transaction of its next batch. The contact policy (Cedar, the same rules as a
disclosure) is decided on those facts right away.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Alias, Customer, Order, Principal, SupportCase
from mailveil.db.base import UTCDateTime, utcnow
from mailveil.policy.engine import Decision, PolicyEngine, PolicyInput
from mailveil.policy.facts import customer_entity_of, disclose_input, principal_entity_of
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER, DIRECTION_TO_PRINCIPAL
from mailveil.relay.models import RelayBounceMark, RelayMessage

# The purpose a disclosure to each kind of principal is made for (policy/*.cedar).
PURPOSE_BY_KIND = {"seller": "order", "employee": "support", "service": "notification"}


@dataclass(frozen=True)
class Route:
    """An alias row seen from one direction, with the facts the relay decides on."""

    direction: str  # messages.DIRECTION_TO_CUSTOMER or DIRECTION_TO_PRINCIPAL
    alias: str  # what the principal sees for the customer
    reverse_alias: str  # what the customer sees for the principal
    revoked: bool
    customer: Customer  # detached: read its columns, decrypt with contacts.customer_address
    principal: Principal  # detached
    order_status: str | None
    order_placed_at: datetime | None
    open_case: bool
    # Marked after repeated hard bounces (relay.bounces): mail to that side is refused.
    customer_bouncing: bool = False
    principal_bouncing: bool = False
    # The conversation lifecycle (relay.lifecycle): when the latest order entered its status,
    # when the customer last wrote to the principal, the principal's messages to the
    # customer in the last 24 hours.
    order_status_at: datetime | None = None
    customer_wrote_at: datetime | None = None
    recent_to_customer: int = 0

    @property
    def customer_id(self) -> int:
        return self.customer.id

    @property
    def principal_id(self) -> int:
        return self.principal.id

    @property
    def customer_ref(self) -> str:
        return f"customer:{self.customer.id}"

    @property
    def principal_ref(self) -> str:
        return f"principal:{self.principal.id}"

    @property
    def opt_outs(self) -> frozenset[str]:
        return frozenset(self.customer.opt_outs or ())

    def principal_addresses(self) -> list[str]:
        """The principal's own addresses (sending and delivery), lowercased, deduplicated."""
        attrs: dict[str, Any] = self.principal.attributes or {}
        found: list[str] = []
        delivery = attrs.get("delivery_address")
        for value in [delivery, *(attrs.get("sending_addresses") or [])]:
            if isinstance(value, str) and "@" in value and value.lower() not in found:
                found.append(value.lower())
        return found

    def delivery_address(self) -> str | None:
        """Where mail for the principal goes: ``delivery_address`` if the principal has one,
        else its first sending address; None when it has neither."""
        addresses = self.principal_addresses()
        return addresses[0] if addresses else None

    def policy_input(self, settings: Settings, *, now: datetime | None = None) -> PolicyInput:
        kind = self.principal.kind
        return disclose_input(
            principal_entity_of(self.principal),
            customer_entity_of(self.customer),
            purpose=PURPOSE_BY_KIND.get(kind, "order"),
            ref=None,
            window_days=settings.seller_contact_window_days,
            order_placed_at=self.order_placed_at,
            open_case=self.open_case,
            now=now,
        )

    def contact_decision(self, settings: Settings, policy: PolicyEngine) -> Decision:
        """May the principal still reach this customer (same rules as a disclosure)?"""
        return policy.decide(self.policy_input(settings))


@functools.cache
def _route_statement() -> Any:
    """Built once (construction costs more than the query); ``addresses`` is an expanding
    bound parameter, so one statement answers a whole batch of recipients."""
    addresses: Any = bindparam("addresses", expanding=True, type_=String())
    latest = (
        select(Order.status, Order.placed_at)
        .where(Order.customer_id == Alias.customer_id, Order.seller_id == Alias.principal_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(1)
        .correlate(Alias)
    )
    status = latest.with_only_columns(Order.status).scalar_subquery()
    placed = latest.with_only_columns(Order.placed_at).scalar_subquery()
    status_at = latest.with_only_columns(
        func.coalesce(Order.status_changed_at, Order.placed_at)
    ).scalar_subquery()
    pair = (
        RelayMessage.customer_id == Alias.customer_id,
        RelayMessage.principal_id == Alias.principal_id,
    )
    wrote = (
        select(func.max(RelayMessage.created_at))
        .where(*pair, RelayMessage.direction == DIRECTION_TO_PRINCIPAL)
        .correlate(Alias)
        .scalar_subquery()
    )
    since: Any = bindparam("since", type_=UTCDateTime())
    recent = (
        select(func.count(RelayMessage.id))
        .where(
            *pair,
            RelayMessage.direction == DIRECTION_TO_CUSTOMER,
            RelayMessage.created_at >= since,
        )
        .correlate(Alias)
        .scalar_subquery()
    )
    open_case = (
        exists()
        .where(
            SupportCase.customer_id == Alias.customer_id,
            SupportCase.assignee_id == Alias.principal_id,
            SupportCase.status == "open",
        )
        .correlate(Alias)
    )
    customer_bouncing = (
        exists()
        .where(
            RelayBounceMark.customer_id == Alias.customer_id,
            RelayBounceMark.marked_at.is_not(None),
        )
        .correlate(Alias)
    )
    principal_bouncing = (
        exists()
        .where(
            RelayBounceMark.principal_id == Alias.principal_id,
            RelayBounceMark.marked_at.is_not(None),
        )
        .correlate(Alias)
    )
    return (
        select(
            Alias,
            Customer,
            Principal,
            status,
            placed,
            open_case,
            customer_bouncing,
            principal_bouncing,
            status_at,
            wrote,
            recent,
        )
        .join(Customer, Customer.id == Alias.customer_id)
        .join(Principal, Principal.id == Alias.principal_id)
        .where(or_(Alias.address.in_(addresses), Alias.reverse_address.in_(addresses)))
    )


def lookup_routes(session: Session, addresses: Sequence[str]) -> dict[str, Route]:
    """Routes for relay-domain ``addresses`` (lowercased), keyed by address; one SELECT."""
    wanted = sorted({a.strip().lower() for a in addresses})
    if not wanted:
        return {}
    since = utcnow() - timedelta(days=1)
    rows = session.execute(_route_statement(), {"addresses": wanted, "since": since}).all()
    session.expunge_all()
    out: dict[str, Route] = {}
    for row in rows:
        alias, customer, principal, status, placed, open_case, c_bouncing, p_bouncing = row[:8]
        status_at, wrote, recent = row[8:]
        for address, direction in (
            (alias.address, DIRECTION_TO_CUSTOMER),
            (alias.reverse_address, DIRECTION_TO_PRINCIPAL),
        ):
            if address in wanted:
                out[address] = Route(
                    direction=direction,
                    alias=alias.address,
                    reverse_alias=alias.reverse_address,
                    revoked=alias.revoked_at is not None,
                    customer=customer,
                    principal=principal,
                    order_status=status,
                    order_placed_at=placed,
                    open_case=bool(open_case),
                    customer_bouncing=bool(c_bouncing),
                    principal_bouncing=bool(p_bouncing),
                    order_status_at=status_at,
                    customer_wrote_at=wrote,
                    recent_to_customer=int(recent or 0),
                )
    return out


def lookup_route(session: Session, address: str) -> Route | None:
    """The route for one relay-domain ``address`` (any case), or None. One SELECT."""
    address = address.strip().lower()
    return lookup_routes(session, [address]).get(address)


__all__ = ["PURPOSE_BY_KIND", "Route", "lookup_route", "lookup_routes"]
