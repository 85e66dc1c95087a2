"""Drift from the employee's own baseline over a longer window, through the real job on both
backends: a slow leak (a few customers a day looked up without their case, for weeks) that
no single day gives away is alerted, with the share, its own baseline and the peers' in the
reason; an employee whose work always cites few cases, as the same share every week, is not.
Work is committed for real, so each test gets its own database."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import mailveil.ledger.append as ledger_append
from mailveil.config import Settings
from mailveil.contacts.customers import create_customer
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case
from mailveil.detect.anomalies import AnomalyConfig, run_anomaly_job
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import init_signing_key
from mailveil.vault import Vault, init_keys

DAYS = 35
FIRST = date(2026, 3, 2)  # a Monday
LEAK_FROM = 21  # the slow leak: weekdays from day 21 on
STAFF = 14


def _at(day: date, hour: int) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()) * 1_000_000


def _lookup(pid: int, cid: int, ref: str | None) -> Event:
    detail = {"principal": f"principal:{pid}", "team": "eu", "minted": False}
    return Event("disclosure", f"principal:{pid}", f"customer:{cid}", None, "support", ref, detail)


def _history(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int]:
    """STAFF agents at work on weekdays, each customer looked up citing its case 9 times in
    10; the leaker adds 3 customers a day without a case from LEAK_FROM on; the steady one
    has always cited a case for only 60 % of its customers. Returns (leaker, steady)."""
    init_keys(settings)
    init_signing_key(settings)
    vault, ledger = Vault.open(settings), Ledger.load(settings)
    rng = random.Random(11)
    with Session(engine) as s, s.begin():
        staff = [
            create_principal(
                s,
                kind="employee",
                external_id=f"agent-{n}",
                attributes={"team": "eu", "role": "agent", "region": "EU"},
            ).id
            for n in range(STAFF)
        ]
        customers = [
            create_customer(
                s, vault, external_id=f"c-{n}", email=f"c{n}@example.com", country="DE"
            ).id
            for n in range(300)
        ]
        for cid in customers:
            create_case(s, external_id=f"case-{cid}", customer_id=cid, assignee_id=staff[0])
    leaker, steady = staff[3], staff[5]
    for d in range(DAYS):
        if d % 7 >= 5:
            continue
        day = FIRST + timedelta(days=d)
        events = []
        for pid in staff:
            cite = 0.6 if pid == steady else 0.9
            for cid in rng.sample(customers, rng.randint(6, 9)):
                events.append(_lookup(pid, cid, f"case-{cid}" if rng.random() < cite else None))
            if pid == leaker and d >= LEAK_FROM:
                events.extend(_lookup(pid, cid, None) for cid in rng.sample(customers, 3))
        at = _at(day, 11)
        monkeypatch.setattr(ledger_append, "now_us", lambda at=at: at)
        with Session(engine) as s, s.begin():
            ledger.append(s, events)
    return leaker, steady


def test_a_slow_leak_is_alerted_by_its_drift_and_a_steady_habit_is_not(
    own_engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaker, steady = _history(own_engine, settings, monkeypatch)
    since, until = FIRST + timedelta(days=14), FIRST + timedelta(days=DAYS - 1)
    report = run_anomaly_job(own_engine, settings, since=since, until=until, budget_per_1000=20.0)
    assert [a.employee_id for a in report.alerts] == [leaker]
    alert = report.alerts[0]
    assert (alert.day - FIRST).days >= LEAK_FROM
    text = "\n".join(alert.reasons)
    assert "customers looked up without their case over 14 days:" in text
    assert "vs own baseline" in text and "peers" in text
    assert alert.features["uncited_share_wd"] > 0.2
    # The share of the steady one is as high or higher, every week: nothing new for them.
    assert steady not in {a.employee_id for a in report.alerts}
    # Without the drift window's extra days the same leak is not news: the feature does it.
    short = run_anomaly_job(
        own_engine,
        settings,
        since=since,
        until=until,
        budget_per_1000=20.0,
        config=AnomalyConfig(drift_days=1, drift_base_days=14),
    )
    assert leaker not in {a.employee_id for a in short.alerts}
