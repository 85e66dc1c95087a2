"""The OpenAPI document, made to say exactly what the server answers.

FastAPI declares its own 422 body (``HTTPValidationError``, ``application/json``) and nothing
about the other errors. Every error here is an RFC 9457 problem (``application/problem+json``),
so each operation is given the problem answers it can produce: 400/422 for input, 401/403
where it needs a key, 404/409 for what it names, 405 (with ``Allow``), 413 for a body too
large, 503 (with ``Retry-After``) when the database is busy or gone. Fuzzing (Schemathesis, in
the suite) checks that the document and the server agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from mailveil.api.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; some problems carry more members",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    "400": "Malformed request (for example a body that is not JSON)",
    "401": "Missing or invalid API key",
    "403": "The key's role may not do this, or policy denied it",
    "404": "No such resource",
    "405": "Method not allowed (see the Allow header)",
    "409": "Conflicts with the current state (a duplicate, a version, the last admin key)",
    "413": "Request body too large",
    "415": "Unsupported media type",
    "422": "Invalid input",
    "429": "Rate limited",
    "503": "The database is busy or unreachable; retry after Retry-After seconds",
}
_HEADERS: dict[str, dict[str, Any]] = {
    "401": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "405": {"Allow": {"schema": {"type": "string"}}},
    "503": {"Retry-After": {"schema": {"type": "string"}}},
}
# Every operation: input checks, the database, method and size limits.
_ALWAYS = ("400", "404", "405", "409", "413", "415", "422", "429", "503")
# Operations that need an API key.
_AUTHENTICATED = ("401", "403")


def _problem_response(status: str, existing: dict[str, Any] | None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _DESCRIPTIONS[status]}
    if existing and existing.get("description") and status not in ("422",):
        response["description"] = existing["description"]
    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _REF}}
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def exact_openapi(app: FastAPI, models: Sequence[type[BaseModel]] = ()) -> dict[str, Any]:
    """The document FastAPI builds, with every operation's problem answers declared.

    ``models`` are request bodies a route reads itself (JSON or NDJSON by media type) and
    names by reference in its ``openapi_extra``."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for model in models:
        schemas.setdefault(
            model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}")
        )
    for path_item in doc.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in ("get", "put", "post", "patch", "delete", "head", "options"):
                continue
            responses = operation.setdefault("responses", {})
            wanted = _ALWAYS + (_AUTHENTICATED if operation.get("security") else ())
            for status in wanted:
                responses[status] = _problem_response(status, responses.get(status))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc


def install_exact_openapi(app: FastAPI, models: Sequence[type[BaseModel]] = ()) -> None:
    app.openapi = lambda: exact_openapi(app, models)  # type: ignore[method-assign]


__all__ = ["PROBLEM_SCHEMA", "exact_openapi", "install_exact_openapi"]
