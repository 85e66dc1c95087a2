"""Prometheus metrics. One registry per app (no global state); labels are route templates and
outcomes, never paths with ids or addresses in them."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mailveil_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mailveil_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.disclosures = Counter(
            "mailveil_disclosures", "Disclosure decisions", ["outcome"], registry=self.registry
        )
        self.customers_imported = Counter(
            "mailveil_customers_imported",
            "Customer import rows",
            ["outcome"],
            registry=self.registry,
        )
        self.access_refusals = Counter(
            "mailveil_access_refusals",
            "Employee access refused (a signal input for detection)",
            ["code"],
            registry=self.registry,
        )
        self.reveals = Counter(
            "mailveil_reveal_events", "Break-glass reveal steps", ["step"], registry=self.registry
        )
        self.ledger_appends = Counter(
            "mailveil_ledger_entries_appended",
            "Ledger entries appended through the API",
            registry=self.registry,
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            # path_format drops convertors ("{customer_id:int}" is counted as "{customer_id}").
            template = (
                getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            )
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
