"""The anomaly job's DuckDB phase on a ledger-shaped table: routine list pages are not
lookups without a case, and a steady few reveals a day is caught over the week (no single
day gives it away). Found by benchmarks/leak_scenarios.py, where both went wrong."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from mailveil.detect.anomalies import run_duckdb_phase
from mailveil.detect.anomalies_extract import RAW_DDL, SIDE_DDL

FIRST = date(2026, 3, 2)  # a Monday
DAYS = 35
AGENTS = 20
INSIDER = 7


def _us(day: date, hour: float) -> int:
    at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour)
    return int(at.timestamp() * 1_000_000)


def _ledger(reveals_from: int | None) -> duckdb.DuckDBPyConnection:
    """Agents 1..20 do case work on weekdays; each lists its open cases (a page of 40 rows,
    no case ref) one day in five; from ``reveals_from`` on, INSIDER reveals 3 a day."""
    rng = random.Random(3)
    rows: list[tuple[Any, ...]] = []

    def add(t: int, kind: str, actor: str, subject: str | None, ref: str | None, **d: Any) -> None:
        rows.append((len(rows), t, kind, actor, subject, ref, json.dumps(d)))

    for n in range(DAYS):
        day = FIRST + timedelta(days=n)
        if day.weekday() >= 5:
            continue
        for a in range(1, AGENTS + 1):
            who = f"principal:{a}"
            t = _us(day, 9 + rng.random() * 6)
            for _ in range(rng.randint(6, 12)):
                c = rng.randrange(1, 400)
                ref = f"case-{c}" if rng.random() < 0.9 else None
                add(t, "disclosure", who, f"customer:{c}", ref, principal=who)
            if (n + a) % 5 == 0:
                for c in rng.sample(range(1, 400), 40):
                    add(t + 1, "disclosure", who, f"customer:{c}", None, principal=who)
                add(t + 2, "employee_list", who, None, None, rows=40, export=False)
            if a == INSIDER and reveals_from is not None and n >= reveals_from:
                for c in rng.sample(range(1, 400), 3):
                    add(t + 3, "reveal_requested", who, f"customer:{c}", f"case-{c}")
                    add(t + 4, "reveal_viewed", who, f"customer:{c}", f"case-{c}")
    con = duckdb.connect()
    con.execute(RAW_DDL)
    con.executemany("INSERT INTO raw_events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    for ddl in SIDE_DDL:
        con.execute(ddl)
    con.executemany(
        "INSERT INTO employees VALUES (?, 'eu', 'agent', 'EU')", [[a] for a in range(1, 21)]
    )
    con.executemany("INSERT INTO customers VALUES (?, 'DE')", [[c] for c in range(1, 400)])
    con.executemany("INSERT INTO cases VALUES (?, ?)", [[f"case-{c}", c] for c in range(1, 400)])
    return con


def test_list_pages_are_not_lookups_without_a_case() -> None:
    con = _ledger(reveals_from=None)
    report = run_duckdb_phase(
        con,
        since=FIRST + timedelta(days=14),
        until=FIRST + timedelta(days=DAYS - 1),
        budget_per_1000=10.0,  # 3 alerts over these 300 employee-days, if any day scores
    )
    assert report.alerts == []
    listed, no_case = con.execute(
        "SELECT sum(listed), max(no_case) FROM features WHERE listed > 0"
    ).fetchone() or (0, 0)
    assert listed > 0 and listed % 40 == 0  # every page's rows, and only those
    assert no_case < 40


def test_a_few_reveals_a_day_are_alerted_within_the_week() -> None:
    start = 21  # a Monday
    con = _ledger(reveals_from=start)
    report = run_duckdb_phase(
        con,
        since=FIRST + timedelta(days=14),
        until=FIRST + timedelta(days=DAYS - 1),
        budget_per_1000=10.0,
    )
    assert {a.employee_id for a in report.alerts} == {INSIDER}  # one alert a week at most
    alert = min(report.alerts, key=lambda a: a.day)
    assert 0 <= (alert.day - (FIRST + timedelta(days=start))).days <= 4
    assert any(r.startswith("reveals over 7 days") for r in alert.reasons)
    assert alert.features["reveals"] == 3  # requests: a reveal's view is the same reveal
