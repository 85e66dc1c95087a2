"""Relationships that entitle contact: orders (customer-seller) and support cases
(customer-employee). Plain functions; each flushes and leaves committing to the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.contacts.models import (
    CASE_STATUSES,
    ORDER_STATUSES,
    Customer,
    Order,
    Principal,
    SupportCase,
)
from mailveil.db.base import utcnow
from mailveil.db.lookup import get_or_not_found, one_or_not_found
from mailveil.errors import Conflict, Duplicate, NotFound

_UNSET: Any = object()


def _customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer


def _principal_of_kind(session: Session, principal_id: int, kind: str, role: str) -> Principal:
    principal = session.get(Principal, principal_id)
    if principal is None:
        raise NotFound(f"no principal {principal_id}")
    if principal.kind != kind:
        # The request is well formed; the principal it names is of another kind (409).
        raise Conflict(
            f"principal {principal_id} is a {principal.kind}; the {role} must be a {kind}"
        )
    return principal


def _insert(session: Session, row: Order | SupportCase, what: str, external_id: str) -> None:
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise Duplicate(f"{what} with external id {external_id!r} already exists") from None


# -- orders -------------------------------------------------------------------------------


def create_order(
    session: Session,
    *,
    external_id: str,
    customer_id: int,
    seller_id: int,
    status: str = "placed",
    placed_at: datetime | str | None = None,
) -> Order:
    ext = v.external_id(external_id)
    status = v.choice(status, ORDER_STATUSES, "status")
    placed = utcnow() if placed_at is None else v.moment(placed_at, "placed_at")
    _customer(session, customer_id)
    _principal_of_kind(session, seller_id, "seller", "seller of an order")
    existing = session.scalar(select(Order.id).where(Order.external_id == ext))
    if existing is not None:
        raise Duplicate(f"order with external id {ext!r} already exists (order {existing})")
    order = Order(
        external_id=ext,
        customer_id=customer_id,
        seller_id=seller_id,
        status=status,
        placed_at=placed,
        updated_at=utcnow(),
        status_changed_at=placed,
    )
    _insert(session, order, "order", ext)
    return order


def get_order(session: Session, order_id: int) -> Order:
    return get_or_not_found(session, Order, order_id, "order")


def get_order_by_external_id(session: Session, external_id: str) -> Order:
    ext = v.external_id(external_id)
    stmt = select(Order).where(Order.external_id == ext)
    return one_or_not_found(session, stmt, f"order with external id {ext!r}")


def update_order(session: Session, order_id: int, *, status: str) -> Order:
    new_status = v.choice(status, ORDER_STATUSES, "status")
    order = get_order(session, order_id)
    if new_status != order.status:
        order.status_changed_at = utcnow()
    order.status = new_status
    order.updated_at = utcnow()
    session.flush()
    return order


def list_orders(
    session: Session,
    *,
    customer_id: int | None = None,
    seller_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Order]:
    stmt = select(Order)
    if customer_id is not None:
        stmt = stmt.where(Order.customer_id == customer_id)
    if seller_id is not None:
        stmt = stmt.where(Order.seller_id == seller_id)
    if after_id is not None:
        stmt = stmt.where(Order.id > after_id)
    return list(session.scalars(stmt.order_by(Order.id).limit(v.page_limit(limit))))


def order_view(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "external_id": order.external_id,
        "customer_id": order.customer_id,
        "seller_id": order.seller_id,
        "status": order.status,
        "placed_at": order.placed_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
        "status_changed_at": (order.status_changed_at or order.placed_at).isoformat(),
    }


# -- support cases --------------------------------------------------------------------------


def create_case(
    session: Session,
    *,
    external_id: str,
    customer_id: int,
    assignee_id: int | None = None,
    status: str = "open",
    opened_at: datetime | str | None = None,
) -> SupportCase:
    ext = v.external_id(external_id)
    status = v.choice(status, CASE_STATUSES, "status")
    opened = utcnow() if opened_at is None else v.moment(opened_at, "opened_at")
    _customer(session, customer_id)
    if assignee_id is not None:
        _principal_of_kind(session, assignee_id, "employee", "assignee of a case")
    existing = session.scalar(select(SupportCase.id).where(SupportCase.external_id == ext))
    if existing is not None:
        raise Duplicate(f"support case with external id {ext!r} already exists (case {existing})")
    case = SupportCase(
        external_id=ext,
        customer_id=customer_id,
        assignee_id=assignee_id,
        status=status,
        opened_at=opened,
        updated_at=utcnow(),
        closed_at=utcnow() if status == "closed" else None,
    )
    _insert(session, case, "support case", ext)
    return case


def get_case(session: Session, case_id: int) -> SupportCase:
    return get_or_not_found(session, SupportCase, case_id, "support case")


def get_case_by_external_id(session: Session, external_id: str) -> SupportCase:
    ext = v.external_id(external_id)
    stmt = select(SupportCase).where(SupportCase.external_id == ext)
    return one_or_not_found(session, stmt, f"support case with external id {ext!r}")


def update_case(
    session: Session,
    case_id: int,
    *,
    status: str | None = None,
    assignee_id: int | None = _UNSET,
) -> SupportCase:
    """Change status and/or assignee (``assignee_id=None`` unassigns). Closing stamps
    ``closed_at``; reopening clears it."""
    new_status = None if status is None else v.choice(status, CASE_STATUSES, "status")
    case = get_case(session, case_id)
    if assignee_id is not _UNSET and assignee_id is not None:
        _principal_of_kind(session, assignee_id, "employee", "assignee of a case")
    if assignee_id is not _UNSET:
        case.assignee_id = assignee_id
    if new_status is not None and new_status != case.status:
        case.status = new_status
        case.closed_at = utcnow() if new_status == "closed" else None
    case.updated_at = utcnow()
    session.flush()
    return case


def list_cases(
    session: Session,
    *,
    customer_id: int | None = None,
    assignee_id: int | None = None,
    status: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[SupportCase]:
    stmt = select(SupportCase)
    if customer_id is not None:
        stmt = stmt.where(SupportCase.customer_id == customer_id)
    if assignee_id is not None:
        stmt = stmt.where(SupportCase.assignee_id == assignee_id)
    if status is not None:
        stmt = stmt.where(SupportCase.status == v.choice(status, CASE_STATUSES, "status"))
    if after_id is not None:
        stmt = stmt.where(SupportCase.id > after_id)
    return list(session.scalars(stmt.order_by(SupportCase.id).limit(v.page_limit(limit))))


def case_view(case: SupportCase) -> dict[str, Any]:
    return {
        "id": case.id,
        "external_id": case.external_id,
        "customer_id": case.customer_id,
        "assignee_id": case.assignee_id,
        "status": case.status,
        "opened_at": case.opened_at.isoformat(),
        "closed_at": case.closed_at.isoformat() if case.closed_at else None,
        "updated_at": case.updated_at.isoformat(),
    }


__all__ = [
    "case_view",
    "create_case",
    "create_order",
    "get_case",
    "get_case_by_external_id",
    "get_order",
    "get_order_by_external_id",
    "list_cases",
    "list_orders",
    "order_view",
    "update_case",
    "update_order",
]
