"""RFC 9457 problem details for every error the API returns.

Validation errors are rebuilt without the offending input: pydantic echoes the input value,
which for a customer record would be a real address.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from mailveil.errors import MailveilError
from mailveil.logs import scrub

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:mailveil:problem:"

_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-input", "Invalid input"),
    429: ("rate-limited", "Too many requests"),
}


def problem_body(exc: MailveilError) -> dict[str, Any]:
    """A domain error's problem JSON, for a handler that answers it rather than raising it
    (a policy denial: its ledger entry commits with the answer)."""
    return {
        "type": PROBLEM_BASE + exc.code,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        **exc.extra,
    }


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _validation_errors(raw: Sequence[Any]) -> tuple[str, str, str, list[dict[str, Any]]]:
    errors = []
    malformed = False
    for err in raw:
        if err.get("type") == "json_invalid":
            malformed = True
        # Never echo "input" or "ctx": they can carry the caller's data verbatim.
        errors.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    if malformed:
        return "malformed-json", "Malformed JSON", "the request body is not valid JSON", errors
    return "invalid-input", "Invalid input", f"{len(errors)} field(s) failed validation", errors


def _scrubbed(request: Request, value: str) -> str:
    # Paths and messages can carry what the caller sent (an address typed where an id or an
    # alias goes); an error must not hand it back, nor write it to a log.
    return scrub(value, request.app.state.runtime.settings.relay_domain)


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (as the OpenAPI document lists them):
    Starlette's 405 names only the first route that matched, and GET and POST of one path
    are often two routes."""
    methods: set[str] = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(r.matches(scope)[0] == Match.FULL for r in request.app.router.routes):
            methods.add(method)
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    log = structlog.get_logger("mailveil.api")

    @app.exception_handler(MailveilError)
    async def _domain(request: Request, exc: MailveilError) -> JSONResponse:
        extra: dict[str, Any] = {
            k: v
            for k, v in exc.extra.items()
            if isinstance(v, str | int | float | bool | list) and k != "headers"
        }
        return problem(
            exc.status,
            exc.code,
            exc.title,
            _scrubbed(request, exc.detail),
            _scrubbed(request, request.url.path),
            **extra,
        )

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def _validation(
        request: Request, exc: RequestValidationError | ValidationError
    ) -> JSONResponse:
        code, title, detail, errors = _validation_errors(exc.errors())
        status = 400 if code == "malformed-json" else 422
        for error in errors:
            error["msg"] = _scrubbed(request, error["msg"])
        return problem(
            status, code, title, detail, _scrubbed(request, request.url.path), errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return problem(
            exc.status_code,
            code,
            title,
            _scrubbed(request, detail),
            _scrubbed(request, request.url.path),
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The exception text may hold data; log its type and where, answer generically.
        log.error(
            "unhandled_error",
            path=_scrubbed(request, request.url.path),
            error_type=type(exc).__name__,
        )
        return problem(
            500,
            "internal-error",
            "Internal error",
            "the server failed to handle this request; it has been logged",
            _scrubbed(request, request.url.path),
        )


def problem_bytes(status: int, code: str, title: str, detail: str, instance: str) -> bytes:
    return json.dumps(
        {
            "type": PROBLEM_BASE + code,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": instance,
        }
    ).encode()
