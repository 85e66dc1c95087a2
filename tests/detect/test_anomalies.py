"""The access-anomaly job over a real ledger on both backends: a month of ordinary case work
by a team, then one employee exports thousands of customers outside their region at night.
Work is committed for real, so each test gets its own database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from detect_testkit import LAST, insider_history
from sqlalchemy import Engine

from mailveil.config import Settings
from mailveil.detect.anomalies import run_anomaly_job


def test_night_export_outside_region_is_alerted_with_reasons(
    own_engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    insider = insider_history(own_engine, settings, monkeypatch)
    report = run_anomaly_job(
        own_engine, settings, since=LAST - timedelta(days=9), until=LAST, budget_per_1000=10.0
    )
    assert report.employee_days == 20 * 10
    assert [(a.employee_id, a.day) for a in report.alerts] == [(insider, LAST)]
    alert = report.alerts[0]
    text = "\n".join(alert.reasons)
    assert "rows exported 1500 vs own median 0" in text
    assert "of customers outside region EU vs own median 0%, peers 0%" in text
    assert "of activity outside 07:00-20:00 UTC" in text
    assert alert.features["export_rows"] == 1500
    assert alert.features["out_region_share"] > 0.9
    assert alert.features["off_hours_share"] > 0.9
    assert alert.features["peer_group"] == "team eu-support / agent"
    assert report.extract is not None and report.extract.rows > 1500


def test_quiet_history_raises_nothing_and_cache_reads_incrementally(
    own_engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    insider_history(own_engine, settings, monkeypatch)
    cache = tmp_path / "anomalies.duckdb"
    # Before the export night, at the same budget: nobody is alerted.
    before = run_anomaly_job(
        own_engine,
        settings,
        since=LAST - timedelta(days=9),
        until=LAST - timedelta(days=1),
        budget_per_1000=10.0,
        cache=cache,
    )
    assert before.alerts == []
    assert before.extract is not None and before.extract.scanned_from == -1
    again = run_anomaly_job(
        own_engine,
        settings,
        since=LAST - timedelta(days=9),
        until=LAST,
        budget_per_1000=10.0,
        cache=cache,
    )
    assert again.extract is not None and again.extract.rows == 0  # nothing new since
    assert again.extract.scanned_from == before.extract.scanned_to
    assert len(again.alerts) == 1 and "rows exported 1500" in "\n".join(again.alerts[0].reasons)


def test_budget_zero_and_empty_ledger(own_engine: Engine, settings: Settings) -> None:
    report = run_anomaly_job(own_engine, settings, budget_per_1000=0.0)
    assert report.alerts == [] and report.employee_days == 0
    with pytest.raises(ValueError):
        run_anomaly_job(own_engine, settings, budget_per_1000=-1.0)
