"""Facts: POST one (JSON) or many (NDJSON, a result line per fact line); GET one.

Facts are the only source of eligibility for notifications (``mailveil.notify.facts``).
Posted by the marketplace's backend (admin, backend keys) and by notification services.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from mailveil.api.bulk import is_ndjson, ndjson_body, spool
from mailveil.api.deps import RoleGate, RuntimeDep, SessionDep
from mailveil.auth.keys import Caller, Role
from mailveil.errors import InvalidInput
from mailveil.notify.facts import get_fact, ingest_fact, ingest_lines

router = APIRouter(prefix="/v1/facts", tags=["notifications"])
WriterDep = Annotated[Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.SERVICE))]
ReaderDep = Annotated[
    Caller, Depends(RoleGate(Role.ADMIN, Role.BACKEND, Role.SERVICE, Role.INVESTIGATOR))
]


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={
        200: {
            "description": "the fact was already recorded (JSON), or one result a line (NDJSON)",
            "content": {"application/json": {}, "application/x-ndjson": {}},
        }
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "description": "one fact (see the README)"}
                },
                "application/x-ndjson": {"schema": ndjson_body("one fact per line")},
            },
        }
    },
)
async def post_facts(
    request: Request, session: SessionDep, runtime: RuntimeDep, caller: WriterDep
) -> Any:
    """One fact as JSON (201, or 200 if the same fact was already recorded), or NDJSON: one
    fact a line, answered with one result line each (``created``, ``unchanged``, ``error``)."""
    if is_ndjson(request):
        body = await spool(request)
        batch = runtime.settings.notify_batch_size

        def lines() -> Iterator[bytes]:
            try:
                for result in ingest_lines(session, body.lines(), batch_size=batch):
                    yield json.dumps(result.to_dict()).encode() + b"\n"
            finally:
                body.close()

        return StreamingResponse(lines(), media_type="application/x-ndjson")
    try:
        record = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput("the body is not JSON (send NDJSON as application/x-ndjson)") from exc

    def work() -> Any:
        result = ingest_fact(session, record)
        session.commit()
        return result

    result = await run_in_threadpool(work)
    from fastapi.responses import JSONResponse

    status = 201 if result.status == "created" else 200
    return JSONResponse(get_fact(session, result.fact_id or ""), status_code=status)


@router.get("/{fact_id}")
def get_one(fact_id: str, session: SessionDep, caller: ReaderDep) -> dict[str, Any]:
    return get_fact(session, fact_id)
