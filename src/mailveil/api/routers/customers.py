"""Customers: one JSON object, or many as NDJSON; never an address in any answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from mailveil.access.listing import list_for_employee
from mailveil.api.access_shell import refusals_recorded
from mailveil.api.bulk import is_ndjson, ndjson_body, spool
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.pagination import clamp_limit, next_cursor
from mailveil.api.respond import idempotent, idempotent_bulk
from mailveil.api.types import Country, Email, ExternalId, Id, Limit, Slug
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.customers import (
    create_customer,
    customer_view,
    delete_customer,
    get_customer,
    get_customer_by_external_id,
    import_customers,
    list_customers,
    update_customer,
)
from mailveil.contacts.importing import iter_ndjson
from mailveil.errors import InvalidInput

router = APIRouter(prefix="/v1/customers", tags=["customers"])
BackendDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND))]
MAX_REPORTED = 10_000


# The code within the country ("CA"), or the country's own prefix with it ("US-CA"): the
# prefix must be the customer's country, which the server checks.
SUBDIVISION_PATTERN = r"^(([A-Za-z]{2}-)?[A-Za-z0-9]{1,3})?$"


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: ExternalId
    email: Email = Field(description="the real address; stored encrypted only")
    country: Country
    subdivision: str | None = Field(
        default=None,
        max_length=6,
        pattern=SUBDIVISION_PATTERN,
        description="ISO 3166-2, e.g. US-CA (US laws apply by state)",
    )
    opt_outs: list[Slug] = Field(default_factory=list, max_length=32)
    sensitive_topics: list[Slug] = Field(default_factory=list, max_length=32)
    is_canary: StrictBool = False


class CustomerPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    country: Country | None = None
    subdivision: str | None = Field(
        default=None, max_length=6, pattern=SUBDIVISION_PATTERN, description='"" clears it'
    )
    opt_outs: list[Slug] | None = Field(default=None, max_length=32)
    sensitive_topics: list[Slug] | None = Field(default=None, max_length=32)


class CustomerOut(BaseModel):
    id: int
    external_id: str
    country: str
    subdivision: str | None = None
    opt_outs: list[str]
    sensitive_topics: list[str]
    is_canary: bool
    created_at: str
    updated_at: str | None = None
    deleted_at: str | None = None


class CustomerPage(BaseModel):
    items: list[CustomerOut]
    next: str | None


class ImportSummary(BaseModel):
    created: int
    duplicates: int
    errors: int
    problems: list[dict[str, Any]]
    truncated: bool


@router.post(
    "",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CustomerIn"}},
                "application/x-ndjson": {"schema": ndjson_body("one CustomerIn per line")},
            },
        }
    },
    responses={
        201: {"model": CustomerOut},
        200: {"model": ImportSummary, "description": "bulk NDJSON summary"},
    },
)
async def post_customers(
    request: Request, session: SessionDep, runtime: RuntimeDep, caller: BackendDep
) -> JSONResponse:
    """Create one customer (JSON) or many (NDJSON, streamed, good rows kept, bad rows reported
    with their line numbers)."""
    if is_ndjson(request):
        return await _bulk_import(request, session, runtime, caller)
    body = CustomerIn.model_validate_json(await request.body())

    def handler() -> tuple[int, Any]:
        row = create_customer(
            session,
            runtime.vault,
            external_id=body.external_id,
            email=body.email,
            country=body.country,
            subdivision=body.subdivision,
            opt_outs=body.opt_outs,
            sensitive_topics=body.sensitive_topics,
            is_canary=body.is_canary,
        )
        return 201, customer_view(row)

    return await idempotent(request, session, caller, handler)


async def _bulk_import(
    request: Request, session: Any, runtime: Any, caller: Caller
) -> JSONResponse:
    body = await spool(request)

    def run() -> dict[str, Any]:
        counts = {"created": 0, "duplicate": 0, "error": 0}
        problems: list[dict[str, Any]] = []
        for outcome in import_customers(session, runtime.vault, iter_ndjson(body.lines())):
            counts[outcome.status] += 1
            if outcome.status != "created" and len(problems) < MAX_REPORTED:
                problems.append(outcome.to_dict())
        metrics = request.app.state.metrics
        for status, n in counts.items():
            metrics.customers_imported.labels(status).inc(n)
        return {
            "created": counts["created"],
            "duplicates": counts["duplicate"],
            "errors": counts["error"],
            "problems": problems,
            "truncated": counts["duplicate"] + counts["error"] > len(problems),
        }

    def answer(status: int, summary: Any, replayed: bool) -> JSONResponse:
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return JSONResponse(summary, status_code=status, headers=headers)

    try:
        return await idempotent_bulk(request, session, caller, body, run, answer)
    finally:
        body.close()


class EmployeeRow(BaseModel):
    external_id: str
    country: str
    alias: str
    reverse_alias: str


class EmployeePage(BaseModel):
    items: list[EmployeeRow]
    next: str | None


ListerDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.EMPLOYEE))]


@router.get("", response_model=CustomerPage | EmployeePage)
def get_customers(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ListerDep,
    limit: Annotated[Limit | None, Query(ge=1)] = None,
    after: Annotated[
        str | None, Query(max_length=255, description="the `next` of the previous page")
    ] = None,
    external_id: Annotated[str | None, Query(max_length=255)] = None,
    purpose: Annotated[str, Query(max_length=64, description="employees: why")] = "support",
    scope: Annotated[
        str, Query(description="employees: `assigned` (open cases assigned to me) or `all`")
    ] = "assigned",
    country: Annotated[Country | None, Query()] = None,
    canaries: Annotated[bool, Query(description="backend: include canary customers")] = False,
) -> CustomerPage | EmployeePage:
    """The marketplace backend pages through customers by id. An employee gets only its own
    aliases of the customers policy lets it reach, paged by external id (`after`), limited
    per hour and day, every row a ledgered disclosure."""
    size = clamp_limit(limit, runtime.settings.page_size_default, runtime.settings.page_size_max)
    if caller.role == Role.EMPLOYEE:
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
            )
        session.commit()
        return EmployeePage(items=[EmployeeRow(**r.to_dict()) for r in page.rows], next=page.next)
    if external_id is not None:
        row = get_customer_by_external_id(session, external_id)
        return CustomerPage(items=[CustomerOut(**customer_view(row))], next=None)
    after_id = None
    if after is not None:
        if not after.isdigit():
            raise InvalidInput("after must be the `next` value of the previous page")
        after_id = int(after)
    rows = list_customers(session, after_id=after_id, limit=size + 1, include_canaries=canaries)
    return CustomerPage(
        items=[CustomerOut(**customer_view(r)) for r in rows[:size]], next=next_cursor(rows, size)
    )


# ":int" so /v1/customers/export (employee access) is not read as a customer id: a PATCH
# there is a 405 naming GET, not a 422 about an id.
@router.get("/{customer_id:int}")
def get_one_customer(customer_id: Id, session: SessionDep, _caller: BackendDep) -> CustomerOut:
    return CustomerOut(**customer_view(get_customer(session, customer_id)))


@router.patch("/{customer_id:int}")
def patch_customer(
    customer_id: Id, body: CustomerPatch, session: SessionDep, _caller: BackendDep
) -> CustomerOut:
    row = update_customer(
        session,
        customer_id,
        country=body.country,
        subdivision=body.subdivision,
        opt_outs=body.opt_outs,
        sensitive_topics=body.sensitive_topics,
    )
    session.commit()
    return CustomerOut(**customer_view(row))


@router.delete("/{customer_id:int}")
def remove_customer(customer_id: Id, session: SessionDep, _caller: BackendDep) -> CustomerOut:
    row = delete_customer(session, customer_id)
    session.commit()
    return CustomerOut(**customer_view(row))
