"""The API's request metrics and access log, in one pure-ASGI middleware.

Labels and log fields are route templates (``/v1/customers/{customer_id}``), never paths
with ids or addresses in them. The metrics registry is the Runtime's (``ops.metrics``).
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailveil.logs import get_logger
from mailveil.ops.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
# A caller's request id is echoed and logged only when it is short and plain.
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER and _SANE_ID.match(value):
            return bytes(value).decode("ascii")
    return uuid.uuid4().hex


class MetricsMiddleware:
    """Counts and times every request, logs one ``http_request`` line for it and returns
    its request id in ``X-Request-Id`` (the caller's, when it sent a plain one)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = get_logger("mailveil.api")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, capture)
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("route")
                # path_format drops convertors ("{customer_id:int}" is counted as "{customer_id}").
                template = (
                    getattr(route, "path_format", None)
                    or getattr(route, "path", None)
                    or "unmatched"
                )
                method = scope.get("method", "GET")
                self.metrics.requests.labels(method, template, str(status)).inc()
                self.metrics.latency.labels(method, template).observe(elapsed)
                self.log.info(
                    "http_request",
                    method=method,
                    route=template,
                    status=status,
                    latency_ms=round(elapsed * 1000, 2),
                    key_id=state.get("key_id"),
                    request_id=request_id,
                )


__all__ = ["Metrics", "MetricsMiddleware"]
