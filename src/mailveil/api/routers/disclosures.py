"""Disclosures: hand a principal a customer's alias, decided by policy, written to the ledger.

Sellers and employees may only ask for themselves; the marketplace backend may ask for any
principal. A denial is committed to the ledger and answered as a 403 problem with the
policy's reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from mailveil.access.contact import contact_for_employee
from mailveil.api import idempotency
from mailveil.api.access_shell import refusals_recorded
from mailveil.api.bulk import is_ndjson, ndjson_body, spool
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.api.problems import problem_body
from mailveil.api.respond import idempotent
from mailveil.api.types import Id, Slug
from mailveil.auth.keys import Caller, Role
from mailveil.contacts.customers import get_customer_by_external_id
from mailveil.contacts.disclosures import (
    AnyRequest,
    DisclosureRequest,
    DisclosureResult,
    ExternalDisclosureRequest,
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
    return list(
        disclose_bulk(
            session,
            settings=runtime.settings,
            policy=runtime.policy,
            signer=runtime.signer,
            requests=requests,
            actor=actor,
            commit=False,
        )
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
                    signer=runtime.signer,
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


def _line_results(
    session: Session, runtime: Runtime, caller: Caller, parsed: list[tuple[int, Any] | ParseError]
) -> list[dict[str, Any]]:
    """Results for one batch of parsed lines, in input order, each tagged with its line."""
    out: list[dict[str, Any] | None] = [None] * len(parsed)
    requests: list[AnyRequest] = []
    positions: list[int] = []
    for pos, item in enumerate(parsed):
        if isinstance(item, ParseError):
            out[pos] = {
                "line": item.line,
                "status": "error",
                "error": "invalid-input",
                "reason": item.reason,
            }
            continue
        line, record = item
        try:
            requests.append(to_request(session, DisclosureIn.model_validate(record), caller))
            positions.append(pos)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "line"
            out[pos] = {
                "line": line,
                "status": "error",
                "error": "invalid-input",
                "reason": f"{where}: {first.get('msg', 'invalid')}",
            }
        except MailveilError as exc:
            out[pos] = {"line": line, "status": "error", "error": exc.code, "reason": exc.detail}
    for pos, result in zip(
        positions, _decide(session, runtime, requests, caller.actor), strict=True
    ):
        item = parsed[pos]
        assert not isinstance(item, ParseError)
        out[pos] = {"line": item[0], **result.to_dict()}
    session.commit()
    return [r for r in out if r is not None]


def _batches(
    items: Iterator[tuple[int, Any] | ParseError], size: int
) -> Iterator[list[tuple[int, Any] | ParseError]]:
    batch: list[tuple[int, Any] | ParseError] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _bulk(request: Request, session: Session, runtime: Runtime, caller: Caller) -> Response:
    key = request.headers.get("idempotency-key")
    body = await spool(request)
    if key is not None:
        try:
            key = idempotency.check_key(key)
            hit = idempotency.lookup(session, caller.api_key_id, key, body.sha256)
            if hit is not None:
                return Response(
                    "".join(json.dumps(r) + "\n" for r in hit[1]),
                    status_code=hit[0],
                    media_type=NDJSON,
                    headers={"Idempotent-Replayed": "true"},
                )

            if sum(1 for _ in body.lines()) > MAX_IDEMPOTENT_LINES:
                raise InvalidInput(
                    f"with an Idempotency-Key a bulk request may hold at most "
                    f"{MAX_IDEMPOTENT_LINES} lines; split it, or retry without the key "
                    "(a repeated disclosure returns the same alias)"
                )

            def run_all() -> list[dict[str, Any]]:
                results: list[dict[str, Any]] = []
                for batch in _batches(iter_ndjson(body.lines()), BULK_BATCH):
                    results.extend(_line_results(session, runtime, caller, batch))
                return results

            results = await run_in_threadpool(run_all)
            idempotency.remember(
                session,
                caller.api_key_id,
                key,
                request.method,
                request.url.path,
                body.sha256,
                200,
                results,
            )
            session.commit()
            return Response(
                "".join(json.dumps(r) + "\n" for r in results), status_code=200, media_type=NDJSON
            )
        finally:
            body.close()

    # End the request's (read-only) transaction: the stream below may run for minutes and
    # must not pin a snapshot, nor nest inside it.
    session.commit()

    def stream() -> Iterator[bytes]:
        try:
            with session_scope(runtime.session_factory) as own:
                for batch in _batches(iter_ndjson(body.lines()), BULK_BATCH):
                    for result in _line_results(own, runtime, caller, batch):
                        yield (json.dumps(result) + "\n").encode()
        finally:
            body.close()

    return StreamingResponse(stream(), media_type=NDJSON)
