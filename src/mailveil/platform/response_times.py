"""Sellers' response times, from the relay's own records (``relay_messages``).

A customer's message to a seller is answered by the seller's first later message to that
customer; its response time is the time between the two. Messages the seller marked as
needing no response (``NoResponseNeeded``) are left out, as Amazon leaves them out of its
contact response time. p50 and p95 (nearest rank) are over the answered messages received in
the window; the ones not answered yet are counted apart (``unanswered``) rather than given a
made-up time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow
from mailveil.errors import Forbidden, InvalidInput, NotFound
from mailveil.platform.models import NoResponseNeeded
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER, DIRECTION_TO_PRINCIPAL
from mailveil.relay.models import RelayMessage

DEFAULT_DAYS = 30
MAX_DAYS = 366


@dataclass(frozen=True)
class ResponseTimes:
    seller_id: int
    window_days: float
    received: int  # customers' messages in the window
    excluded: int  # marked "no response needed"
    answered: int
    unanswered: int
    p50_seconds: float | None
    p95_seconds: float | None

    def view(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p * len(sorted_values)))
    return sorted_values[rank - 1]


def _window(days: float) -> timedelta:
    if not 0 < days <= MAX_DAYS:
        raise InvalidInput(f"days must be above 0 and at most {MAX_DAYS}")
    return timedelta(days=days)


def response_times(
    session: Session, seller_id: int, *, days: float = DEFAULT_DAYS, now: datetime | None = None
) -> ResponseTimes:
    principal = session.get(Principal, seller_id)
    if principal is None:
        raise NotFound(f"no principal {seller_id}")
    if principal.kind != "seller":
        raise NotFound(f"no seller {seller_id}")  # another kind of principal is no seller
    now = now or utcnow()
    since = now - _window(days)
    rows = session.execute(
        select(RelayMessage.id, RelayMessage.customer_id, RelayMessage.direction,
               RelayMessage.created_at)
        .where(RelayMessage.principal_id == seller_id, RelayMessage.created_at >= since)
        .order_by(RelayMessage.customer_id, RelayMessage.created_at, RelayMessage.id)
    ).all()  # fmt: skip
    excluded_ids = set(
        session.scalars(
            select(NoResponseNeeded.message_id).where(NoResponseNeeded.principal_id == seller_id)
        )
    )
    return _measure(seller_id, days, rows, excluded_ids)


def _measure(
    seller_id: int, days: float, rows: Iterable[Any], excluded_ids: set[int]
) -> ResponseTimes:
    times: list[float] = []
    received = excluded = unanswered = 0
    waiting: list[datetime] = []  # this customer's messages not answered yet
    customer: int | None = None
    for message_id, customer_id, direction, created in rows:
        if customer_id != customer:
            unanswered += len(waiting)
            waiting, customer = [], customer_id
        if direction == DIRECTION_TO_PRINCIPAL:
            received += 1
            if message_id in excluded_ids:
                excluded += 1
            else:
                waiting.append(created)
        elif direction == DIRECTION_TO_CUSTOMER and waiting:
            times.extend((created - at).total_seconds() for at in waiting)
            waiting = []
    unanswered += len(waiting)
    times.sort()
    return ResponseTimes(
        seller_id=seller_id,
        window_days=days,
        received=received,
        excluded=excluded,
        answered=len(times),
        unanswered=unanswered,
        p50_seconds=percentile(times, 0.50),
        p95_seconds=percentile(times, 0.95),
    )


def all_sellers(
    session: Session, *, days: float = DEFAULT_DAYS, now: datetime | None = None
) -> list[ResponseTimes]:
    """Every seller that received a customer's message in the window."""
    now = now or utcnow()
    since = now - _window(days)
    sellers = session.scalars(
        select(RelayMessage.principal_id)
        .join(Principal, Principal.id == RelayMessage.principal_id)
        .where(
            RelayMessage.created_at >= since,
            RelayMessage.direction == DIRECTION_TO_PRINCIPAL,
            Principal.kind == "seller",
        )
        .distinct()
    ).all()
    return [response_times(session, s, days=days, now=now) for s in sorted(sellers)]


def mark_no_response_needed(session: Session, token: str, *, seller_id: int | None) -> int:
    """Mark the customer's message ``token`` as needing no response; returns its seller.
    ``seller_id``: the calling seller (None: the marketplace's backend)."""
    row = session.scalar(select(RelayMessage).where(RelayMessage.token == token))
    if row is None or (seller_id is not None and row.principal_id != seller_id):
        raise NotFound("no such message")  # another seller's messages are not its to see
    if row.direction != DIRECTION_TO_PRINCIPAL:
        raise Forbidden("only a customer's message to the seller can need no response")
    if session.get(NoResponseNeeded, row.id) is None:
        session.add(NoResponseNeeded(message_id=row.id, principal_id=row.principal_id))
        session.flush()
    return row.principal_id


class ResponseTimeCollector(Collector):
    """``mailveil_seller_response_seconds{seller,quantile}`` at scrape time (30 days)."""

    def __init__(self, session_factory: sessionmaker[Session], days: float = DEFAULT_DAYS):
        self.session_factory = session_factory
        self.days = days

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "mailveil_seller_response_seconds",
            f"Sellers' contact response time over {self.days:g} days (no-response-needed "
            "messages excluded)",
            labels=["seller", "quantile"],
        )
        pending = GaugeMetricFamily(
            "mailveil_seller_unanswered_messages",
            f"Customers' messages to a seller not answered yet ({self.days:g} days)",
            labels=["seller"],
        )
        with self.session_factory() as session:
            for item in all_sellers(session, days=self.days):
                seller = str(item.seller_id)
                for q, value in (("0.5", item.p50_seconds), ("0.95", item.p95_seconds)):
                    if value is not None:
                        gauge.add_metric([seller, q], value)
                pending.add_metric([seller], item.unanswered)
        yield gauge
        yield pending


__all__ = [
    "ResponseTimeCollector",
    "ResponseTimes",
    "all_sellers",
    "mark_no_response_needed",
    "percentile",
    "response_times",
]
