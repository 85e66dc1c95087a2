"""The access-anomaly job over a real ledger on both backends: a month of ordinary case work
by a team, then one employee exports thousands of customers outside their region at night.
Work is committed for real, so each test gets its own database."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import mailveil.ledger.append as ledger_append
from dbkit import private_pg_engine
from mailveil.config import Settings
from mailveil.contacts.customers import create_customer
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine
from mailveil.detect.anomalies import run_anomaly_job
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner, init_signing_key
from mailveil.vault import Vault, init_keys

DAYS = 30
FIRST = date(2026, 3, 2)
LAST = FIRST + timedelta(days=DAYS - 1)


@pytest.fixture(params=["sqlite", "postgres"])
def own_engine(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_available: bool
) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(url=f"sqlite:///{tmp_path / 'anomalies.db'}")
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    if not _pg_available:
        pytest.skip("PostgreSQL not reachable")
    with private_pg_engine("mv_anom") as eng:
        upgrade(eng)
        yield eng


def _at(day: date, hour: int, minute: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()) * (
        1_000_000
    )


def _history(engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> int:
    """20 EU agents doing case work for DAYS days; returns the insider's principal id."""
    init_keys(settings)
    init_signing_key(settings)
    vault, signer = Vault.open(settings), CheckpointSigner.load(settings)
    rng = random.Random(5)
    with Session(engine) as s, s.begin():
        staff = [
            create_principal(
                s,
                kind="employee",
                external_id=f"agent-{n}",
                attributes={"team": "eu-support", "role": "agent", "region": "EU"},
            ).id
            for n in range(20)
        ]
        eu = [
            create_customer(
                s, vault, external_id=f"eu-{n}", email=f"eu{n}@example.com", country="DE"
            ).id
            for n in range(80)
        ]
        for cid in eu:
            create_case(s, external_id=f"case-{cid}", customer_id=cid, assignee_id=staff[0])
        apac = [
            create_customer(
                s, vault, external_id=f"jp-{n}", email=f"jp{n}@example.com", country="JP"
            ).id
            for n in range(1500)
        ]
    insider = staff[7]

    def append(at: int, events: list[Event]) -> None:
        monkeypatch.setattr(ledger_append, "now_us", lambda: at)
        with Session(engine) as s, s.begin():
            ledger_append.append(s, events, settings, signer)

    for d in range(DAYS):
        day = FIRST + timedelta(days=d)
        for pid in staff:
            events = []
            for _ in range(rng.randint(5, 12)):
                cid = rng.choice(eu)
                ref = f"case-{cid}" if rng.random() < 0.9 else None
                detail = {"principal": f"principal:{pid}", "team": "eu-support", "minted": False}
                events.append(
                    Event(
                        "disclosure",
                        f"principal:{pid}",
                        f"customer:{cid}",
                        None,
                        "support",
                        ref,
                        detail,
                    )
                )
            append(_at(day, rng.randint(8, 17), rng.randint(0, 59)), events)
    # The last night: the insider exports every APAC customer at 02:00.
    exported = [
        Event(
            "disclosure",
            f"principal:{insider}",
            f"customer:{cid}",
            None,
            "support",
            None,
            {"principal": f"principal:{insider}", "team": "eu-support", "minted": True},
        )
        for cid in apac
    ]
    summary = {
        "rows": len(apac),
        "withheld": 0,
        "canaries": 0,
        "scope": "all",
        "country": "JP",
        "export": True,
    }
    exported.append(
        Event("employee_list", f"principal:{insider}", None, None, "support", None, summary)
    )
    append(_at(LAST, 2), exported)
    return insider


def test_night_export_outside_region_is_alerted_with_reasons(
    own_engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    insider = _history(own_engine, settings, monkeypatch)
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
    _history(own_engine, settings, monkeypatch)
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
