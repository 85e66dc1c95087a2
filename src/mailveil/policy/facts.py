"""The one builder of Cedar policy inputs, and the database facts they are built from.

Every ``PolicyInput`` production gives Cedar is made here, whatever decides it: a disclosure
(``disclose_input``: the API, the workers, the employee lookup, the relay's contact policy
and ``mailveil policy check``), an employee's list (``list_input``), a reveal request
(``reveal_input``), a relayed message (``message_input``: the contact input's entities with
the message's context, which ``relay.content_rules`` computes) and an operator's test case
(``cedar_input``).
Callers read their facts their own way (one statement for one request, one query per fact
for a batch, the relay's route lookup) and hand them to these functions, which decide what
Cedar sees: the principal entity (``principal_entity``), the customer entity
(``customer_attrs``, or the stand-in customer of a list), the action and the context. So
``policy check`` shows exactly the input production decides on.

Every builder returns sorted tuples (``Attrs``) so equal facts make equal ``PolicyInput``
keys; see ``mailveil.policy.engine`` for why that is the memo key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Customer, Order, Principal, SupportCase
from mailveil.db.base import utcnow
from mailveil.errors import NotFound
from mailveil.policy.engine import (
    ACTION_DISCLOSE,
    ACTION_LIST,
    ACTION_MESSAGE,
    ACTION_REQUEST_REVEAL,
    PRINCIPAL_TYPES,
    Attrs,
    Explanation,
    PolicyEngine,
    PolicyInput,
    Value,
)

IN_CHUNK = 2000  # ids per IN (...) list: well under SQLite's 32766 host parameters
_DAY_US = 86_400 * 1_000_000

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def customer_attrs(
    country: str, opt_outs: Iterable[str], sensitive_topics: Iterable[str], deleted: bool
) -> Attrs:
    # is_canary is deliberately absent: a canary must be decided like anyone else.
    return (
        ("country", country),
        ("deleted", bool(deleted)),
        ("opt_outs", tuple(sorted(opt_outs or ()))),
        ("sensitive_topics", tuple(sorted(sensitive_topics or ()))),
    )


def principal_attrs(kind: str, status: str, attributes: dict[str, Any] | None) -> Attrs:
    attrs = attributes or {}
    if kind == "employee":
        return (
            ("region", str(attrs.get("region") or "")),
            ("role", str(attrs.get("role") or "")),
            ("status", status),
            ("team", str(attrs.get("team") or "")),
        )
    if kind == "service":
        return (("status", status), ("templates", tuple(sorted(attrs.get("templates") or ()))))
    return (("status", status),)


def order_age_days(now: datetime, placed_at: datetime, window_days: int) -> int:
    """Whole days since ``placed_at``, capped at window + 1 ("older than the window")."""
    delta = now - placed_at
    days = max(0, (delta.days * 86_400 + delta.seconds) // 86_400)
    return min(days, window_days + 1)


def context_attrs(
    kind: str,
    purpose: str,
    ref: str | None,
    window_days: int,
    *,
    order_age: int | None = None,
    open_case: bool | None = None,
) -> Attrs:
    """The Cedar context, as name-sorted pairs (built directly: this runs per request)."""
    if kind == "seller":
        if order_age is None:
            return (("purpose", purpose), ("window_days", window_days))
        return (("order_age_days", order_age), ("purpose", purpose), ("window_days", window_days))
    if kind == "employee":
        return (("open_case", bool(open_case)), ("purpose", purpose), ("window_days", window_days))
    if kind == "service" and ref:
        # Only services get the ref, and only as a template name: order and case refs are
        # unique per request and would make every decision a cache miss for no gain.
        return (("purpose", purpose), ("template", ref), ("window_days", window_days))
    return (("purpose", purpose), ("window_days", window_days))


class PrincipalEntity(NamedTuple):
    """A principal as Cedar sees it: its kind (``seller``, ``employee``, ``service``) and
    its attributes. Build it once per principal (``principal_entity``) and reuse it."""

    kind: str
    attrs: Attrs


def principal_entity(
    kind: str, status: str, attributes: dict[str, Any] | None = None
) -> PrincipalEntity:
    return PrincipalEntity(kind, principal_attrs(kind, status, attributes))


def principal_entity_of(principal: Principal) -> PrincipalEntity:
    return principal_entity(principal.kind, principal.status, principal.attributes)


def customer_entity_of(customer: Customer) -> Attrs:
    return customer_attrs(
        customer.country,
        customer.opt_outs,
        customer.sensitive_topics,
        customer.deleted_at is not None,
    )


# The `list` action is about many customers; Cedar still wants a resource.
NO_CUSTOMER = customer_attrs("ZZ", (), (), False)


def cedar_input(
    principal: PrincipalEntity, customer: Attrs, context: Attrs, action: str = ACTION_DISCLOSE
) -> PolicyInput:
    """The input itself; the action builders below and operator test cases (whose context
    is given as it is) come through here."""
    return PolicyInput(PRINCIPAL_TYPES[principal.kind], principal.attrs, customer, context, action)


def disclose_input(
    principal: PrincipalEntity,
    customer: Attrs,
    *,
    purpose: str,
    ref: str | None,
    window_days: int,
    order_placed_at: datetime | None = None,
    open_case: bool = False,
    now: datetime | None = None,
) -> PolicyInput:
    """May this principal be given (or keep using) this customer's alias for ``purpose``?

    ``order_placed_at`` is the newest order between the two (read for sellers only),
    ``open_case`` whether an open case of the customer is assigned to the principal (read for
    employees only); each is ignored for the other kinds. ``now`` defaults to the clock."""
    kind = principal.kind
    age = None
    if kind == "seller" and order_placed_at is not None:
        age = order_age_days(now or utcnow(), order_placed_at, window_days)
    context = context_attrs(
        kind,
        purpose,
        ref,
        window_days,
        order_age=age,
        open_case=open_case if kind == "employee" else None,
    )
    return cedar_input(principal, customer, context)


def list_input(
    employee: PrincipalEntity,
    *,
    purpose: str,
    requested: int,
    used_hour: int,
    used_day: int,
    hour_limit: int,
    day_limit: int,
) -> PolicyInput:
    """May this employee receive ``requested`` more customers (their hourly/daily limits)?"""
    context = (
        ("day_limit", day_limit),
        ("hour_limit", hour_limit),
        ("purpose", purpose),
        ("requested", requested),
        ("used_day", used_day),
        ("used_hour", used_hour),
    )
    return cedar_input(employee, NO_CUSTOMER, context, ACTION_LIST)


def reveal_input(
    employee: PrincipalEntity, customer: Attrs, *, case_assigned: bool, case_open: bool
) -> PolicyInput:
    """May this employee ask for this customer's real address on a case?"""
    context = (("case_assigned", case_assigned), ("case_open", case_open))
    return cedar_input(employee, customer, context, ACTION_REQUEST_REVEAL)


def message_input(
    contact: PolicyInput,
    *,
    allowed_reasons: Value,
    critical: bool,
    known: bool,
    in_thread: bool,
    reason: str,
    order_status: str | None,
) -> PolicyInput:
    """May this principal send this message to this customer? The principal and customer are
    those of ``contact`` (the route's contact-policy input, so the two decisions see the same
    entities); the context is the message's. ``order_status`` is given to sellers only."""
    context: list[tuple[str, Value]] = [
        ("allowed_reasons", allowed_reasons),
        ("critical", critical),
        ("in_thread", in_thread),
        ("known", known),
    ]
    if contact.principal_type.lower() == "seller" and order_status is not None:
        context.append(("order_status", order_status))
    context.append(("reason", reason))
    return contact._replace(context=tuple(context), action=ACTION_MESSAGE)


def latest_orders(
    session: Session, pairs: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], datetime]:
    """Latest ``placed_at`` per (customer, seller) pair that has an order."""
    wanted = set(pairs)
    out: dict[tuple[int, int], datetime] = {}
    # Filter on customers only: "customer IN (...) AND seller IN (...)" makes SQLite probe
    # the index once per combination; a customer's orders are few and adjacent.
    for cs in chunks(sorted({c for c, _ in wanted})):
        rows = session.execute(
            select(Order.customer_id, Order.seller_id, func.max(Order.placed_at))
            .where(Order.customer_id.in_(cs))
            .group_by(Order.customer_id, Order.seller_id)
        )
        for cid, sid, placed in rows:
            if (cid, sid) in wanted and placed is not None:
                out[(cid, sid)] = placed
    return out


def open_case_pairs(session: Session, pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (customer, employee) pairs with an open case assigned to that employee."""
    wanted = set(pairs)
    out: set[tuple[int, int]] = set()
    for cs in chunks(sorted({c for c, _ in wanted})):
        rows = session.execute(
            select(SupportCase.customer_id, SupportCase.assignee_id)
            .where(SupportCase.customer_id.in_(cs), SupportCase.status == "open")
            .distinct()
        )
        for cid, eid in rows:
            if eid is not None and (cid, eid) in wanted:
                out.add((cid, eid))
    return out


def policy_input(
    session: Session,
    settings: Settings,
    customer_id: int,
    principal_id: int,
    purpose: str,
    ref: str | None = None,
    *,
    now: datetime | None = None,
) -> PolicyInput:
    """The Cedar input for one request (``mailveil policy check``, tests, single decisions).

    One round trip: the customer's and the principal's facts, the newest order between them
    and whether an open case of the customer is assigned to the principal, in one statement
    (this runs on every employee contact lookup)."""
    latest_order = (
        select(func.max(Order.placed_at))
        .where(Order.customer_id == customer_id, Order.seller_id == principal_id)
        .scalar_subquery()
    )
    has_case = (
        select(SupportCase.id)
        .where(
            SupportCase.customer_id == customer_id,
            SupportCase.assignee_id == principal_id,
            SupportCase.status == "open",
        )
        .exists()
    )
    row = session.execute(
        select(
            Customer.country,
            Customer.opt_outs,
            Customer.sensitive_topics,
            Customer.deleted_at,
            Principal.kind,
            Principal.status,
            Principal.attributes,
            latest_order,
            has_case,
        )
        .select_from(Customer)
        .join(Principal, Principal.id == principal_id)
        .where(Customer.id == customer_id)
    ).first()
    if row is None:
        if session.get(Customer, customer_id) is None:
            raise NotFound(f"no customer {customer_id}")
        raise NotFound(f"no principal {principal_id}")
    country, opt_outs, topics, deleted_at, kind, status, attributes, placed, open_case_row = row
    return disclose_input(
        principal_entity(kind, status, attributes),
        customer_attrs(country, opt_outs, topics, deleted_at is not None),
        purpose=purpose,
        ref=ref,
        window_days=settings.seller_contact_window_days,
        order_placed_at=placed,
        open_case=bool(open_case_row),
        now=now,
    )


def explain_request(
    session: Session,
    settings: Settings,
    policy: PolicyEngine,
    customer_id: int,
    principal_id: int,
    purpose: str,
    ref: str | None = None,
) -> Explanation:
    """What ``mailveil policy check`` shows: the facts, and which policies permit or forbid."""
    return policy.explain(policy_input(session, settings, customer_id, principal_id, purpose, ref))


__all__ = [
    "IN_CHUNK",
    "NO_CUSTOMER",
    "PrincipalEntity",
    "cedar_input",
    "chunks",
    "context_attrs",
    "customer_attrs",
    "customer_entity_of",
    "disclose_input",
    "explain_request",
    "latest_orders",
    "list_input",
    "open_case_pairs",
    "order_age_days",
    "policy_input",
    "principal_attrs",
    "principal_entity",
    "principal_entity_of",
    "reveal_input",
]
