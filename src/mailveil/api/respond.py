"""Answering POSTs: commit, then reply — replaying the first answer for a reused Idempotency-Key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.api import idempotency
from mailveil.api.problems import PROBLEM_MEDIA_TYPE
from mailveil.auth.keys import Caller

# What a handler returns: HTTP status and a JSON-able body.
Outcome = tuple[int, Any]


def _response(status: int, body: Any, replayed: bool = False) -> JSONResponse:
    media = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(body, status_code=status, media_type=media, headers=headers)


async def idempotent(
    request: Request, session: Session, caller: Caller, handler: Callable[[], Outcome]
) -> JSONResponse:
    """Run ``handler`` once per (API key, Idempotency-Key); commit its work with the answer."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, body = handler()
        session.commit()
        return _response(status, body)
    key = idempotency.check_key(key)
    fingerprint = idempotency.request_fingerprint(
        request.method, request.url.path, await request.body()
    )
    hit = idempotency.lookup(session, caller.api_key_id, key, fingerprint)
    if hit is not None:
        return _response(hit[0], hit[1], replayed=True)
    status, body = handler()
    idempotency.remember(
        session, caller.api_key_id, key, request.method, request.url.path, fingerprint, status, body
    )
    try:
        session.commit()
    except IntegrityError as exc:
        # The same key committed first from a concurrent request: nothing of ours was stored.
        session.rollback()
        raise idempotency.IdempotencyInFlight(
            "another request with this Idempotency-Key completed first; retry to get its answer"
        ) from exc
    return _response(status, body)
