"""Prometheus metrics after real traffic: the relay's transactions, latency and connections,
ledger appends, notification deliveries and steps, detection runs and the database's state,
scraped from /metrics; no label value is an address."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from ops_kit import drive_slice, notify_kit, shared_runtime
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from mailveil.api.app import create_app
from mailveil.config import Settings
from mailveil.ledger.models import LedgerEntry

kit = notify_kit


@pytest.fixture
def env(settings: Settings, notify_db: object) -> Iterator[kit.NotifyEnv]:
    yield from kit.open_env(kit.notify_settings(settings), notify_db)  # type: ignore[arg-type]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _sum(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(
        v for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == w for k, w in labels.items())
    )  # fmt: skip


def test_metrics_after_real_traffic(env: kit.NotifyEnv) -> None:
    runtime = shared_runtime(env)
    with env.session() as s:
        size_before = s.scalar(select(func.count()).select_from(LedgerEntry)) or 0
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        before = _samples(client.get("/metrics").text)
        drive_slice(env, runtime, client)
        scraped = client.get("/metrics")
    assert scraped.status_code == 200
    samples = _samples(scraped.text)
    with env.session() as s:
        size_after = s.scalar(select(func.count()).select_from(LedgerEntry)) or 0

    delivered = _value(
        samples, "mailveil_relay_transactions_total",
        direction="to_customer", decision="delivered", reply_class="2xx",
    )  # fmt: skip
    assert delivered == 3
    assert _sum(samples, "mailveil_relay_transactions_total", decision="refused_at_rcpt") >= 1
    assert _sum(samples, "mailveil_relay_transaction_seconds_count") >= 4
    assert _value(samples, "mailveil_relay_connections") == 0  # every session closed
    appended = _value(samples, "mailveil_ledger_entries_appended_total")
    appended -= _value(before, "mailveil_ledger_entries_appended_total")
    assert appended == size_after - size_before > 0
    assert _value(samples, "mailveil_ledger_size") == size_after
    assert _value(samples, "mailveil_notify_deliveries_total", outcome="delivered") == 3
    assert _sum(samples, "mailveil_notify_steps_total") >= 1
    assert _value(samples, "mailveil_notify_sends", status="completed") == 1
    assert _value(samples, "mailveil_detect_runs_total", outcome="ok") == 1
    assert _value(samples, "mailveil_database_up") == 1
    assert _value(samples, "mailveil_http_requests_total", method="POST", route="/v1/customers",
                  status="201") == 1  # fmt: skip
    # No label carries an address (nor an alias: labels are kinds and templates only).
    labels = " ".join(v for (_n, ls) in samples for _k, v in ls)
    assert "@" not in labels
