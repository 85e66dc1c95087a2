"""Employee access to customers: the contact lookup, the CSV export, and the access log the
marketplace shows each customer. Included before the customers router (``/export``)."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from mailveil.access.access_log import access_log
from mailveil.access.contact import contact_for_employee
from mailveil.access.listing import list_for_employee
from mailveil.api.access_shell import refusals_recorded
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.problems import PROBLEM_MEDIA_TYPE, problem_body
from mailveil.api.types import Country, Cursor, Id, Limit
from mailveil.auth.keys import Caller, Role
from mailveil.csvout import SafeCsvWriter
from mailveil.errors import InvalidInput

router = APIRouter(prefix="/v1/customers", tags=["employee access"])
EmployeeDep = Annotated[Caller, Depends(RoleGate(Role.EMPLOYEE))]
BackendDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND))]
EXPORT_COLUMNS = ("external_id", "country", "alias", "reverse_alias")


@router.get("/export", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def export_customers(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: EmployeeDep,
    purpose: Annotated[str, Query(max_length=64)] = "support",
    scope: Annotated[str, Query(description="`assigned` or `all`")] = "assigned",
    country: Annotated[Country | None, Query()] = None,
    after: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[Limit | None, Query(ge=1)] = None,
) -> Response:
    """CSV of this employee's aliases (the same rows and rules as the list). When more rows
    remain, the `X-Next-After` header carries the cursor for the next export."""
    size = limit or runtime.settings.employee_export_max_rows
    with refusals_recorded(request, session, runtime):
        page = list_for_employee(
            session,
            settings=runtime.settings,
            policy=runtime.policy,
            ledger=runtime.ledger,
            vault=runtime.vault,
            employee_id=caller.principal_id,
            purpose=purpose,
            scope=scope,
            country=country,
            after=after,
            limit=size,
            export=True,
        )
    session.commit()
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows((r.external_id, r.country, r.alias, r.reverse_alias) for r in page.rows)
    headers = {"Content-Disposition": 'attachment; filename="customers.csv"'}
    if page.next is not None:
        headers["X-Next-After"] = page.next
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/{customer_ref}/contact")
def get_contact(
    customer_ref: str,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: EmployeeDep,
    by: Annotated[Literal["id", "external_id"], Query()] = "id",
    purpose: Annotated[str, Query(max_length=64)] = "support",
    ref: Annotated[str | None, Query(max_length=255, description="the case")] = None,
) -> JSONResponse:
    """The alias for (this customer, the calling employee), if policy allows: an open case
    assigned to the employee, or what the operator's policy permits for its role."""
    customer_id = None
    external_id = None
    if by == "id":
        if not customer_ref.isdigit() or len(customer_ref) > 19:
            raise InvalidInput("the customer id must be a number (or pass by=external_id)")
        customer_id = int(customer_ref)
    else:
        external_id = customer_ref
    with refusals_recorded(request, session, runtime):
        result = contact_for_employee(
            session,
            settings=runtime.settings,
            policy=runtime.policy,
            ledger=runtime.ledger,
            employee_id=caller.principal_id,
            customer_id=customer_id,
            customer_external_id=external_id,
            purpose=purpose,
            ref=ref,
        )
    session.commit()
    if not result.allowed:
        request.app.state.metrics.access_refusals.labels("contact-denied").inc()
        denied = result.denial()
        return JSONResponse(
            problem_body(denied), status_code=denied.status, media_type=PROBLEM_MEDIA_TYPE
        )
    return JSONResponse(
        {
            "customer_id": result.customer_id,
            "alias": result.alias,
            "reverse_alias": result.reverse_alias,
            "purpose": result.purpose,
            "ref": result.ref,
            "policies": list(result.policy_ids),
            "ledger_seq": result.ledger_seq,
        }
    )


@router.get("/{customer_id}/access-log")
def get_access_log(
    customer_id: Id,
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: BackendDep,
    after: Annotated[
        Cursor | None, Query(ge=0, description="the `next` of the previous page")
    ] = None,
    limit: Annotated[Limit | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """Who saw this customer's alias or real address, when, and for what case or order: for
    the customer's account page. Teams, not people, unless the operator allows it."""
    size = min(limit or runtime.settings.page_size_default, runtime.settings.page_size_max)
    entries, cursor = access_log(
        session, runtime.settings, customer_id, after_seq=after, limit=size
    )
    return {"items": [e.to_dict() for e in entries], "next": cursor}
