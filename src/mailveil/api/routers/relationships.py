"""Relationships that entitle contact: orders (customer–seller) and support cases
(customer–employee)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.pagination import clamp_limit, next_cursor
from mailveil.api.respond import idempotent
from mailveil.api.types import Cursor, ExternalId, Id, Limit, Moment
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.relationships import (
    case_view,
    create_case,
    create_order,
    get_case,
    get_order,
    list_cases,
    list_orders,
    order_view,
    update_case,
    update_order,
)

router = APIRouter(prefix="/v1/relationships", tags=["relationships"])
BackendDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND))]
OrderStatus = Literal["placed", "paid", "shipped", "delivered", "cancelled", "returned", "closed"]


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["order"]
    external_id: ExternalId
    customer_id: Id
    seller_id: Id
    status: OrderStatus = "placed"
    placed_at: Moment | None = None


class CaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["case"]
    external_id: ExternalId
    customer_id: Id
    assignee_id: Id | None = None
    status: Literal["open", "closed"] = "open"
    opened_at: Moment | None = None


class OrderPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: OrderStatus


class CasePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "closed"] | None = None
    assignee_id: Id | None = None


class RelationshipPage(BaseModel):
    items: list[dict[str, Any]]
    next: str | None


@router.post("", status_code=201)
async def post_relationship(
    request: Request,
    session: SessionDep,
    caller: BackendDep,
    body: Annotated[OrderIn | CaseIn, Field(discriminator="type")],
) -> JSONResponse:
    """Record an order (`"type": "order"`) or a support case (`"type": "case"`)."""

    def handler() -> tuple[int, Any]:
        if isinstance(body, OrderIn):
            order = create_order(
                session,
                external_id=body.external_id,
                customer_id=body.customer_id,
                seller_id=body.seller_id,
                status=body.status,
                placed_at=body.placed_at,
            )
            return 201, {"type": "order", **order_view(order)}
        case = create_case(
            session,
            external_id=body.external_id,
            customer_id=body.customer_id,
            assignee_id=body.assignee_id,
            status=body.status,
            opened_at=body.opened_at,
        )
        return 201, {"type": "case", **case_view(case)}

    return await idempotent(request, session, caller, handler)


@router.get("")
def get_relationships(
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: BackendDep,
    type: Literal["order", "case"],
    customer_id: Id | None = None,
    principal_id: Annotated[Id | None, Query(description="seller or assignee")] = None,
    limit: Annotated[Limit | None, Query(ge=1)] = None,
    after: Annotated[Cursor | None, Query(ge=0)] = None,
) -> RelationshipPage:
    size = clamp_limit(limit, runtime.settings.page_size_default, runtime.settings.page_size_max)
    if type == "order":
        orders = list_orders(
            session, customer_id=customer_id, seller_id=principal_id, after_id=after, limit=size + 1
        )
        return RelationshipPage(
            items=[{"type": "order", **order_view(o)} for o in orders[:size]],
            next=next_cursor(orders, size),
        )
    cases = list_cases(
        session, customer_id=customer_id, assignee_id=principal_id, after_id=after, limit=size + 1
    )
    return RelationshipPage(
        items=[{"type": "case", **case_view(c)} for c in cases[:size]],
        next=next_cursor(cases, size),
    )


@router.get("/orders/{order_id}")
def get_one_order(order_id: Id, session: SessionDep, _caller: BackendDep) -> dict[str, Any]:
    return {"type": "order", **order_view(get_order(session, order_id))}


@router.patch("/orders/{order_id}")
def patch_order(
    order_id: Id, body: OrderPatch, session: SessionDep, _caller: BackendDep
) -> dict[str, Any]:
    order = update_order(session, order_id, status=body.status)
    session.commit()
    return {"type": "order", **order_view(order)}


@router.get("/cases/{case_id}")
def get_one_case(case_id: Id, session: SessionDep, _caller: BackendDep) -> dict[str, Any]:
    return {"type": "case", **case_view(get_case(session, case_id))}


@router.patch("/cases/{case_id}")
def patch_case(
    case_id: Id, body: CasePatch, session: SessionDep, _caller: BackendDep
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if body.status is not None:
        changes["status"] = body.status
    if "assignee_id" in body.model_fields_set:
        changes["assignee_id"] = body.assignee_id
    case = update_case(session, case_id, **changes)
    session.commit()
    return {"type": "case", **case_view(case)}
