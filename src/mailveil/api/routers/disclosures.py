"""Disclosures: hand a principal a customer's alias, decided by policy, written to the ledger.

Sellers and employees may only ask for themselves; the marketplace backend may ask for any
principal. A denial is committed to the ledger and answered as a 403 problem with the
policy's reason.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from mailveil.access.contact import contact_for_employee
from mailveil.api.access_shell import refusals_recorded
from mailveil.api.bulk import is_ndjson, ndjson_body, spool
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.problems import problem_body
from mailveil.api.respond import idempotent, idempotent_bulk
from mailveil.api.types import Id, Slug
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.customers import get_customer_by_external_id
from mailveil.contacts.disclosures import (
    AnyRequest,
    DisclosureRequest,
    DisclosureResult,
    ExternalDisclosureRequest,
    disclose_batch,
    disclose_bulk,
)
from mailveil.contacts.importing import ParseError, iter_ndjson
from mailveil.db.session import session_scope
from mailveil.errors import Forbidden, InvalidInput, MailveilError, NotFound
from mailveil.runtime import Runtime

router = APIRouter(prefix="/v1/disclosures", tags=["disclosures"])
DiscloserDep = Annotated[
    Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.SELLER, Role.EMPLOYEE))
]
NDJSON = "application/x-ndjson"
BULK_BATCH = 2000
# Replaying a bulk answer means storing it; beyond this many lines, retry without the key
# instead (a repeated disclosure returns the same alias, so a plain retry is safe).
MAX_IDEMPOTENT_LINES = 10_000


class DisclosureIn(BaseModel):
    # The rules of the validator below, stated in the document too: the customer by exactly
    # one of id or external id; the principal by id, or by kind and external id together.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["customer_id"], "properties": {"customer_id": {"type": "integer"}}},
                {
                    "required": ["customer_external_id"],
                    "properties": {"customer_external_id": {"type": "string"}},
                },
            ],
            "allOf": [
                {
                    "anyOf": [
                        {
                            "required": ["principal_id"],
                            "properties": {"principal_id": {"type": "integer"}},
                        },
                        {
                            "required": ["principal_kind"],
                            "properties": {"principal_kind": {"type": "string"}},
                        },
                    ],
                    "description": "seller and employee keys name themselves",
                },
                {
                    "if": {
                        "required": ["principal_kind"],
                        "properties": {"principal_kind": {"type": "string"}},
                    },
                    "then": {
                        "required": ["principal_external_id"],
                        "properties": {
                            "principal_external_id": {"type": "string"},
                            "principal_id": {"type": "null"},
                        },
                    },
                },
                {
                    "if": {
                        "required": ["principal_external_id"],
                        "properties": {"principal_external_id": {"type": "string"}},
                    },
                    "then": {
                        "required": ["principal_kind"],
                        "properties": {"principal_kind": {"type": "string"}},
                    },
                },
            ],
        },
    )
    customer_id: Id | None = None
    customer_external_id: str | None = Field(default=None, max_length=255)
    principal_id: Id | None = None
    principal_kind: str | None = Field(default=None, max_length=20)
    principal_external_id: str | None = Field(default=None, max_length=255)
    purpose: Slug = Field(description="order, support, notification, ...")
    ref: str | None = Field(
        default=None, max_length=255, description="the order, case or template this is for"
    )

    @model_validator(mode="after")
    def _one_way_to_name_each(self) -> DisclosureIn:
        if (self.customer_id is None) == (self.customer_external_id is None):
            raise ValueError("give exactly one of customer_id or customer_external_id")
        by_ext = self.principal_kind is not None or self.principal_external_id is not None
        if by_ext and (self.principal_kind is None or self.principal_external_id is None):
            raise ValueError("principal_kind and principal_external_id go together")
        if by_ext and self.principal_id is not None:
            raise ValueError("give principal_id or principal_kind + principal_external_id")
        return self


class DisclosureOut(BaseModel):
    status: str
    customer_id: Id | None
    principal_id: Id | None
    purpose: str
    ref: str | None
    alias: str | None = None
    reverse_alias: str | None = None
    minted: bool | None = None
    policies: list[str]
    ledger_seq: int | None


def to_request(session: Session, body: DisclosureIn, caller: Caller) -> AnyRequest:
    """The domain request, with sellers and employees pinned to themselves."""
    principal_id = body.principal_id
    if caller.role in (Role.SELLER, Role.EMPLOYEE):
        if body.principal_kind is not None or (
            principal_id is not None and principal_id != caller.principal_id
        ):
            raise Forbidden("a seller or employee key may only ask for its own disclosures")
        principal_id = caller.principal_id
    if body.principal_kind is not None and body.principal_external_id is not None:
        if body.customer_external_id is None:
            raise InvalidInput("name the customer by external id when naming the principal so")
        return ExternalDisclosureRequest(
            body.customer_external_id,
            body.principal_kind,
            body.principal_external_id,
            body.purpose,
            body.ref,
        )
    if principal_id is None:
        raise InvalidInput(
            "name the principal: principal_id, or principal_kind and principal_external_id"
        )
    customer_id = body.customer_id
    if customer_id is None:
        assert body.customer_external_id is not None
        customer_id = get_customer_by_external_id(session, body.customer_external_id).id
    return DisclosureRequest(customer_id, principal_id, body.purpose, body.ref)


def _answer(result: DisclosureResult) -> tuple[int, Any]:
    if result.allowed:
        return 201, result.to_dict()
    if result.error:
        raise (NotFound if result.error == NotFound.code else InvalidInput)(result.reason)
    denied = result.denial()
    return denied.status, problem_body(denied)


def _decide(
    session: Session, runtime: Runtime, requests: list[AnyRequest], actor: str
) -> list[DisclosureResult]:
    return disclose_batch(
        session,
        settings=runtime.settings,
        policy=runtime.policy,
        ledger=runtime.ledger,
        requests=requests,
        actor=actor,
    )


def _count(request: Request, results: list[DisclosureResult]) -> None:
    metric = request.app.state.metrics.disclosures
    for result in results:
        metric.labels(result.status).inc()


@router.post(
    "",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/DisclosureIn"}},
                NDJSON: {"schema": ndjson_body("one DisclosureIn per line")},
            },
        }
    },
    responses={
        201: {"model": DisclosureOut},
        403: {"description": "denied by policy (problem JSON with the reason)"},
        200: {"content": {NDJSON: {}}, "description": "bulk: one result per line"},
    },
)
async def post_disclosure(
    request: Request, session: SessionDep, runtime: RuntimeDep, caller: DiscloserDep
) -> Response:
    """Disclose one customer's alias to one principal (JSON), or many pairs (NDJSON in,
    NDJSON out, one result per input line, in order)."""
    if caller.role == Role.EMPLOYEE and is_ndjson(request):
        raise Forbidden(
            "employee keys cannot disclose in bulk: use GET /v1/customers or "
            "/v1/customers/export, which are limited per hour and day and audited"
        )
    if is_ndjson(request):
        return await _bulk(request, session, runtime, caller)
    body = DisclosureIn.model_validate_json(await request.body())

    def handler() -> tuple[int, Any]:
        if caller.role == Role.EMPLOYEE:
            # The same path as GET .../contact: limits, suspension and refusals recorded.
            req = to_request(session, body, caller)
            with refusals_recorded(request, session, runtime):
                result = contact_for_employee(
                    session,
                    settings=runtime.settings,
                    policy=runtime.policy,
                    ledger=runtime.ledger,
                    employee_id=caller.principal_id,
                    customer_id=req.customer_id if isinstance(req, DisclosureRequest) else None,
                    purpose=body.purpose,
                    ref=body.ref,
                )
            _count(request, [result])
            return _answer(result)
        results = _decide(session, runtime, [to_request(session, body, caller)], caller.actor)
        _count(request, results)
        return _answer(results[0])

    return await idempotent(request, session, caller, handler)


def _error(line: int, code: str, reason: str) -> dict[str, Any]:
    return {"line": line, "status": "error", "error": code, "reason": reason}


def _line_results(
    session: Session, runtime: Runtime, caller: Caller, lines: Iterable[bytes]
) -> Iterator[dict[str, Any]]:
    """One result per input line, in input order. ``disclose_bulk`` batches the requests and
    commits each batch before its results come out; a line that does not parse or names
    nothing is answered in its place."""
    # Lines read but not yet answered, in order: an error, or None for a request whose
    # result ``disclose_bulk`` has yet to give.
    pending: deque[tuple[int, dict[str, Any] | None]] = deque()

    def requests() -> Iterator[AnyRequest]:
        for item in iter_ndjson(lines):
            if isinstance(item, ParseError):
                pending.append((item.line, _error(item.line, "invalid-input", item.reason)))
                continue
            line, record = item
            try:
                request = to_request(session, DisclosureIn.model_validate(record), caller)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "line"
                reason = f"{where}: {first.get('msg', 'invalid')}"
                pending.append((line, _error(line, "invalid-input", reason)))
            except MailveilError as exc:
                pending.append((line, _error(line, exc.code, exc.detail)))
            else:
                pending.append((line, None))
                yield request

    results = disclose_bulk(
        session,
        settings=runtime.settings,
        policy=runtime.policy,
        ledger=runtime.ledger,
        requests=requests(),
        actor=caller.actor,
        batch_size=BULK_BATCH,
    )
    for result in results:
        line, error = pending.popleft()
        while error is not None:
            yield error
            line, error = pending.popleft()
        yield {"line": line, **result.to_dict()}
    session.commit()  # the lookups after the last batch
    for _, error in pending:
        assert error is not None
        yield error


def _ndjson(status: int, results: Any, replayed: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        "".join(json.dumps(r) + "\n" for r in results),
        status_code=status,
        media_type=NDJSON,
        headers=headers,
    )


async def _bulk(request: Request, session: Session, runtime: Runtime, caller: Caller) -> Response:
    body = await spool(request)
    if request.headers.get("idempotency-key") is not None:

        def at_most_max_lines() -> None:
            if sum(1 for _ in body.lines()) > MAX_IDEMPOTENT_LINES:
                raise InvalidInput(
                    f"with an Idempotency-Key a bulk request may hold at most "
                    f"{MAX_IDEMPOTENT_LINES} lines; split it, or retry without the key "
                    "(a repeated disclosure returns the same alias)"
                )

        def run_all() -> list[dict[str, Any]]:
            return list(_line_results(session, runtime, caller, body.lines()))

        try:
            return await idempotent_bulk(
                request, session, caller, body, run_all, _ndjson, before_run=at_most_max_lines
            )
        finally:
            body.close()

    # End the request's (read-only) transaction: the stream below may run for minutes and
    # must not pin a snapshot, nor nest inside it.
    session.commit()

    def stream() -> Iterator[bytes]:
        try:
            with session_scope(runtime.session_factory) as own:
                for result in _line_results(own, runtime, caller, body.lines()):
                    yield (json.dumps(result) + "\n").encode()
        finally:
            body.close()

    return StreamingResponse(stream(), media_type=NDJSON)
