"""Prometheus metrics for one process, built once with the Runtime (no global registry).

Two kinds:

- counters and histograms of what this process did (API requests, relay transactions,
  notification deliveries, detection runs, alerts sent), incremented where it happens;
- the state kept in the database (sends by status, reports by outcome, signals, incidents,
  the ledger's size), read by ``DatabaseState`` when scraped, so every process that serves
  ``/metrics`` reports the same totals whichever process did the work.

Labels are route templates, outcomes, kinds and reply classes: never an address, a token or
an id (unbounded label values would also grow the registry without limit).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_SMTP_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class DatabaseState(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # no query when registered, only when scraped

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from mailveil.detect.models import AbuseReport, Incident, Signal
        from mailveil.ledger.models import LedgerHead
        from mailveil.notify.models import Send

        up = GaugeMetricFamily("mailveil_database_up", "1 when the metrics query succeeded")
        families = []
        try:
            with self.session_factory() as s:
                for name, doc, column, label in (
                    ("mailveil_notify_sends", "Sends by status", Send.status, "status"),
                    ("mailveil_detect_reports", "Abuse reports by outcome", AbuseReport.outcome,
                     "outcome"),
                    ("mailveil_detect_signals", "Detection signals by kind", Signal.kind, "kind"),
                    ("mailveil_incidents", "Incidents by status", Incident.status, "status"),
                ):  # fmt: skip
                    family = GaugeMetricFamily(name, doc, labels=[label])
                    for value, count in s.execute(select(column, func.count()).group_by(column)):
                        family.add_metric([str(value)], float(count))
                    families.append(family)
                size = s.scalar(select(func.max(LedgerHead.size))) or 0
                ledger = GaugeMetricFamily("mailveil_ledger_size", "Entries in the ledger")
                ledger.add_metric([], float(size))
                families.append(ledger)
                s.rollback()
        except SQLAlchemyError:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families


class Metrics:
    def __init__(self, session_factory: sessionmaker[Session] | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        # -- API
        self.requests = Counter(
            "mailveil_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mailveil_http_request_seconds", "HTTP request latency", ["method", "route"],
            registry=registry, buckets=_LATENCY,
        )  # fmt: skip
        self.disclosures = Counter(
            "mailveil_disclosures", "Disclosure decisions", ["outcome"], registry=registry
        )
        self.customers_imported = Counter(
            "mailveil_customers_imported", "Customer import rows", ["outcome"], registry=registry
        )
        self.access_refusals = Counter(
            "mailveil_access_refusals",
            "Employee access refused (a signal input for detection)",
            ["code"],
            registry=registry,
        )
        self.reveals = Counter(
            "mailveil_reveal_events", "Break-glass reveal steps", ["step"], registry=registry
        )
        # -- ledger: counted when the appending transaction commits (ops.ledger_count)
        self.ledger_appends = Counter(
            "mailveil_ledger_entries_appended",
            "Ledger entries appended (committed) by this process",
            registry=registry,
        )
        # -- relay
        self.relay_transactions = Counter(
            "mailveil_relay_transactions",
            "SMTP transactions by direction, decision and reply class",
            ["direction", "decision", "reply_class"],
            registry=registry,
        )
        self.relay_latency = Histogram(
            "mailveil_relay_transaction_seconds",
            "Time from MAIL FROM to the final reply of a transaction",
            ["direction"],
            registry=registry,
            buckets=_SMTP_LATENCY,
        )
        self.relay_connections = Gauge(
            "mailveil_relay_connections", "Open SMTP connections", registry=registry
        )
        # -- notifications
        self.notify_deliveries = Counter(
            "mailveil_notify_deliveries",
            "Notification recipients handed to the relay, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.notify_gate_failures = Counter(
            "mailveil_notify_gate_failures", "Sends halted by a gate", ["gate"], registry=registry
        )
        self.notify_steps = Counter(
            "mailveil_notify_steps", "Send worker steps by result", ["result"], registry=registry
        )
        # -- detection
        self.detect_runs = Counter(
            "mailveil_detect_runs", "Detection runs by outcome", ["outcome"], registry=registry
        )
        self.detect_signals_filed = Counter(
            "mailveil_detect_signals_filed",
            "Signals filed by detection runs of this process",
            ["kind"],
            registry=registry,
        )
        # -- alerts (ops.alerts)
        self.alerts = Counter(
            "mailveil_alerts", "Alert webhook deliveries by outcome", ["outcome"],
            registry=registry,
        )  # fmt: skip
        if session_factory is not None:
            from mailveil.platform.response_times import ResponseTimeCollector

            registry.register(DatabaseState(session_factory))
            # Sellers' response times, computed at scrape time from the relay's records.
            registry.register(ResponseTimeCollector(session_factory))


def reply_class(code: int) -> str:
    """'2xx', '4xx', '5xx': the label for a reply code."""
    return f"{code // 100}xx" if 200 <= code < 600 else "other"


__all__ = ["DatabaseState", "Metrics", "reply_class"]
