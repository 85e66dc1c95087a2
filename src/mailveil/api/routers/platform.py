"""The marketplace platform (issue 18): order transitions and the contact reasons a seller may
use now; message events; sellers' response times and tracker counts. Thin: the work is in
``mailveil.contacts.lifecycle`` and ``mailveil.platform``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from mailveil.api.deps import CallerDep, RoleGate, RuntimeDep, SessionDep
from mailveil.api.pagination import clamp_limit
from mailveil.api.types import MAX_PAGE, Id
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.lifecycle import transition_order
from mailveil.contacts.relationships import get_order, order_view
from mailveil.errors import Forbidden, NotFound
from mailveil.platform.events import events_after, ndjson
from mailveil.platform.reasons import order_reasons
from mailveil.platform.response_times import mark_no_response_needed, response_times
from mailveil.platform.trackers import tracker_counts

Token = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
router = APIRouter(tags=["platform"])
BackendDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND))]
OrderStatus = Literal["placed", "paid", "shipped", "delivered", "cancelled", "returned", "closed"]


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: OrderStatus
    at: datetime | None = None


def own_seller(caller: Caller, seller_id: int) -> None:
    """The marketplace's backend and admins see every seller; a seller only itself."""
    if caller.role in (Role.ADMIN, Role.BACKEND):
        return
    if caller.role == Role.SELLER and caller.principal_id == seller_id:
        return
    raise Forbidden("only the marketplace's backend, an admin or the seller itself")


@router.post("/v1/relationships/orders/{order_id}/transitions")
def post_transition(
    order_id: Id, body: TransitionIn, session: SessionDep, _caller: BackendDep
) -> dict[str, Any]:
    """Move an order along its life (placed, paid, shipped, delivered, returned, cancelled,
    closed); its conversation's contact window starts again. 409 names the allowed moves."""
    order = transition_order(session, order_id, to=body.to, at=body.at)
    session.commit()
    return {"type": "order", **order_view(order)}


@router.get("/v1/relationships/orders/{order_id}/contact-reasons")
def get_contact_reasons(
    order_id: Id, session: SessionDep, runtime: RuntimeDep, caller: CallerDep
) -> dict[str, Any]:
    """The contact reasons the order's seller may use now, each with why (or why not)."""
    order = get_order(session, order_id)
    if caller.role == Role.SELLER and caller.principal_id != order.seller_id:
        raise NotFound(f"no order {order_id}")  # another seller's orders are not its to see
    own_seller(caller, order.seller_id)
    return order_reasons(session, runtime.settings, runtime.policy, order)


@router.get("/v1/events", response_class=StreamingResponse)
def get_events(
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: BackendDep,
    after: Annotated[
        int, Query(ge=-1, le=2**62, description="the cursor of the last event you have")
    ] = -1,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
) -> StreamingResponse:
    """Message events (relayed, refused, bounced, complained, held) after a cursor, as
    NDJSON, oldest first. ``X-Next-Cursor`` is the ``after`` of the next page (absent when
    there is nothing more now)."""
    size = clamp_limit(limit, runtime.settings.page_size_default, runtime.settings.page_size_max)
    batch = events_after(session, after, size)
    headers = {}
    if len(batch) == size:
        headers["X-Next-Cursor"] = str(batch[-1]["cursor"])
    return StreamingResponse(ndjson(batch), media_type="application/x-ndjson", headers=headers)


@router.get("/v1/sellers/{seller_id}/response-times")
def get_response_times(
    seller_id: Id,
    session: SessionDep,
    caller: CallerDep,
    days: Annotated[float, Query(gt=0, le=366)] = 30,
) -> dict[str, Any]:
    """The seller's contact response time (p50, p95) over the last ``days``; customers'
    messages marked "no response needed" are left out."""
    own_seller(caller, seller_id)
    return response_times(session, seller_id, days=days).view()


@router.post("/v1/relay-messages/{token}/no-response-needed", status_code=204)
def post_no_response_needed(token: Token, session: SessionDep, caller: CallerDep) -> Response:
    """Mark a customer's message as needing no response (its seller, or the backend)."""
    if caller.role in (Role.ADMIN, Role.BACKEND):
        seller = None
    elif caller.role == Role.SELLER and caller.principal_id is not None:
        seller = caller.principal_id
    else:
        raise Forbidden("only the message's seller or the marketplace's backend")
    mark_no_response_needed(session, token, seller_id=seller)
    session.commit()
    return Response(status_code=204)


@router.get("/v1/sellers/{seller_id}/trackers")
def get_trackers(
    seller_id: Id,
    session: SessionDep,
    caller: CallerDep,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> dict[str, Any]:
    """Tracking pixels and click-tracking links removed from the seller's mail to customers."""
    own_seller(caller, seller_id)
    return tracker_counts(session, seller_id, days=days)
