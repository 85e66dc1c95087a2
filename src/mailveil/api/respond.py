"""Answering POSTs: commit, then reply — replaying the first answer for a reused Idempotency-Key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.api import idempotency
from mailveil.api.bulk import SpooledBody
from mailveil.api.problems import PROBLEM_MEDIA_TYPE
from mailveil.auth.keys import Caller

# What a handler returns: HTTP status and a JSON-able body.
Outcome = tuple[int, Any]
AnswerT = TypeVar("AnswerT", bound=Response)


def _response(status: int, body: Any, replayed: bool = False) -> JSONResponse:
    media = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(body, status_code=status, media_type=media, headers=headers)


async def idempotent(
    request: Request, session: Session, caller: Caller, handler: Callable[[], Outcome]
) -> JSONResponse:
    """Run ``handler`` once per (API key, Idempotency-Key); commit its work with the answer.

    The database work runs in the thread pool: ``mailveil serve`` shares its event loop with
    the SMTP relay, which must not wait while a request waits for a busy database."""
    key = request.headers.get("idempotency-key")
    if key is None:

        def plain() -> Outcome:
            outcome = handler()
            session.commit()
            return outcome

        status, body = await run_in_threadpool(plain)
        return _response(status, body)
    checked = idempotency.check_key(key)
    fingerprint = idempotency.request_fingerprint(
        request.method, request.url.path, await request.body()
    )
    method, path = request.method, request.url.path

    def keyed() -> tuple[Outcome, bool]:
        hit = idempotency.lookup(session, caller.api_key_id, checked, fingerprint)
        if hit is not None:
            return hit, True
        status, body = handler()
        idempotency.remember(
            session, caller.api_key_id, checked, method, path, fingerprint, status, body
        )
        try:
            session.commit()
        except IntegrityError as exc:
            # The same key committed first from a concurrent request: nothing of ours stored.
            session.rollback()
            raise idempotency.IdempotencyInFlight(
                "another request with this Idempotency-Key completed first; retry to get its answer"
            ) from exc
        return (status, body), False

    (status, body), replayed = await run_in_threadpool(keyed)
    return _response(status, body, replayed=replayed)


async def idempotent_bulk(
    request: Request,
    session: Session,
    caller: Caller,
    body: SpooledBody,
    run: Callable[[], Any],
    answer: Callable[[int, Any, bool], AnswerT],
    *,
    before_run: Callable[[], None] | None = None,
) -> AnswerT:
    """Run a bulk request (``run``, in the thread pool) once per (API key, Idempotency-Key).

    A retry with the same key and body gets the stored answer back, rendered by
    ``answer(status, body, replayed)``; without a key the request just runs. ``before_run``
    may refuse a keyed request before it runs (its whole answer will be stored). ``run``
    commits its own work; the stored answer is committed after it."""
    key = request.headers.get("idempotency-key")
    if key is not None:
        key = idempotency.check_key(key)
        hit = idempotency.lookup(session, caller.api_key_id, key, body.sha256)
        if hit is not None:
            return answer(hit[0], hit[1], True)
        if before_run is not None:
            before_run()
    result = await run_in_threadpool(run)
    if key is not None:
        idempotency.remember(
            session,
            caller.api_key_id,
            key,
            request.method,
            request.url.path,
            body.sha256,
            200,
            result,
        )
        session.commit()
    return answer(200, result, False)
