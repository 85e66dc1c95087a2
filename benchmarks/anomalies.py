"""Access anomalies: speed of the job and recall at a fixed alert budget.

    .venv/bin/python benchmarks/anomalies.py               # 10,000,000 events, 1M ledger
    .venv/bin/python benchmarks/anomalies.py --n 200000    # quick run

Three parts, each labelled in the output:

1. SYNTHETIC, DuckDB phase. ``--n`` access events of the ledger's shape (seq, time_us, kind,
   actor, subject, ref, detail JSON text: disclosures, export lists, reveals, refusals) are
   generated straight into a DuckDB table ``raw_events`` (untimed). Real ledger rows cannot be
   bulk-inserted (generated columns, hash chain), so this measures the job's DuckDB phase
   (JSON parsing, features, own/peer baselines, IsolationForest, alerts) beside the bare
   DuckDB scan of the same table (every column read once), in the same run.
2. REAL LEDGER, extraction. A fresh SQLite file filled through ``mailveil.ledger.append``
   (``--ledger`` entries, untimed) is copied into DuckDB by the job's extraction, once per
   load method (NumPy columns, temporary CSV + read_csv, executemany), beside a bare
   ``sqlite3`` fetch of the same rows; then the whole job on that file.
3. RECALL. Seeded marketplaces with injected insiders of five kinds (bulk export, slow leak
   over weeks, leak hidden in case work, off-hours, out-of-region); an insider counts as found
   when one of its leak days is alerted, at ``--budget`` alerts per 1,000 employee-days.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from rich.console import Console
from rich.table import Table

from mailveil.detect.anomalies import AnomalyConfig, run_anomaly_job, run_duckdb_phase
from mailveil.detect.anomalies_extract import RAW_COLUMNS, copy_rows
from mailveil.ledger.append import Ledger

START = date(2026, 1, 5)  # a Monday
REGIONS = {"EU": ["DE", "FR", "GB"], "NA": ["US", "CA"], "APAC": ["JP", "AU"], "LATAM": ["BR"]}
SHIFT_CENTER = {"EU": 12.0, "NA": 17.0, "APAC": 3.0, "LATAM": 15.0}  # UTC hour of mid-shift
KINDS = ("bulk_export", "slow_leak", "case_cover", "off_hours", "out_of_region")


@dataclass
class World:
    employees: int
    days: int
    customers: int
    emp_region: np.ndarray[Any, Any]  # index into REGION_NAMES
    emp_team: np.ndarray[Any, Any]
    emp_role: np.ndarray[Any, Any]
    cust_region: np.ndarray[Any, Any]
    cust_country: np.ndarray[Any, Any]
    insiders: list[tuple[int, str, list[int]]]  # employee, kind, leak days


REGION_NAMES = list(REGIONS)


def _world(rng: np.random.Generator, employees: int, days: int, customers: int) -> World:
    teams = max(1, employees // 20)
    team_region = rng.integers(0, len(REGION_NAMES), teams)
    emp_team = rng.integers(0, teams, employees)
    emp_region = team_region[emp_team]
    emp_role = rng.choice(3, employees, p=[0.8, 0.15, 0.05])  # agent, lead, analyst
    cust_region = rng.choice(len(REGION_NAMES), customers, p=[0.5, 0.3, 0.12, 0.08])
    cust_country = np.array(
        [
            REGIONS[REGION_NAMES[r]][i % len(REGIONS[REGION_NAMES[r]])]
            for i, r in enumerate(cust_region)
        ],
        dtype=object,
    )
    return World(
        employees, days, customers, emp_region, emp_team, emp_role, cust_region, cust_country, []
    )


def _pick_customers(
    rng: np.random.Generator, w: World, region: np.ndarray[Any, Any], n: int
) -> np.ndarray[Any, Any]:
    """Customers of the given regions (by index into region pools), one per row."""
    pools = [np.flatnonzero(w.cust_region == r) for r in range(len(REGION_NAMES))]
    out = np.empty(n, dtype=np.int64)
    for r, pool in enumerate(pools):
        sel = region == r
        out[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
    return out


def generate(
    seed: int, employees: int, days: int, customers: int, insiders_per_kind: int
) -> tuple[World, dict[str, np.ndarray[Any, Any]]]:
    """Numeric event columns (one row per access event) and the world they came from."""
    rng = np.random.default_rng(seed)
    w = _world(rng, employees, days, customers)
    team_rate = rng.lognormal(np.log(14), 0.5, w.emp_team.max() + 1)
    rate = team_rate[w.emp_team] * rng.lognormal(0, 0.35, employees)
    case_share = rng.uniform(0.85, 0.98, employees)
    away = rng.uniform(0.01, 0.05, employees)  # out-of-region lookups (travellers, movers)
    ed_emp, ed_day = np.meshgrid(np.arange(employees), np.arange(days), indexing="ij")
    ed_emp, ed_day = ed_emp.ravel(), ed_day.ravel()
    weekday = (ed_day % 7) < 5
    active = rng.random(len(ed_emp)) < np.where(weekday, 0.9, 0.08)
    ed_emp, ed_day = ed_emp[active], ed_day[active]
    n = rng.poisson(rate[ed_emp] * rng.lognormal(0, 0.3, len(ed_emp)))
    cols: dict[str, list[np.ndarray[Any, Any]]] = {
        k: [] for k in ("emp", "day", "hour", "kind", "cust", "ref", "rows")
    }

    def add_lookups(
        emp: np.ndarray[Any, Any],
        day: np.ndarray[Any, Any],
        hour: np.ndarray[Any, Any],
        cust: np.ndarray[Any, Any],
        ref: np.ndarray[Any, Any],
    ) -> None:
        cols["emp"].append(emp)
        cols["day"].append(day)
        cols["hour"].append(hour)
        cols["kind"].append(np.zeros(len(emp), dtype=np.int8))
        cols["cust"].append(cust)
        cols["ref"].append(ref)
        cols["rows"].append(np.zeros(len(emp), dtype=np.int64))

    def hours(emp: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        centre = np.array([SHIFT_CENTER[r] for r in REGION_NAMES])[w.emp_region[emp]]
        return np.round(rng.normal(centre, 2.2)).astype(np.int64) % 24

    # Case work: a customer is looked up ~1.4 times a day, mostly citing their own case.
    emp = np.repeat(ed_emp, n)
    day = np.repeat(ed_day, n)
    region = np.where(
        rng.random(len(emp)) < away[emp],
        rng.integers(0, len(REGION_NAMES), len(emp)),
        w.emp_region[emp],
    )
    cust = _pick_customers(rng, w, region, len(emp))
    repeat = rng.random(len(emp)) < 0.3
    cust[1:][repeat[1:]] = cust[:-1][repeat[1:]]
    ref = np.where(rng.random(len(emp)) < case_share[emp], cust, -1)
    add_lookups(emp, day, hours(emp), cust, ref)
    # Exports: analysts export a few hundred rows about weekly; nobody else exports.
    p_export = np.array([0.0, 0.0, 0.2])[w.emp_role[ed_emp]]
    ex = rng.random(len(ed_emp)) < p_export
    ex_emp, ex_day = ed_emp[ex], ed_day[ex]
    ex_rows = rng.integers(50, 500, len(ex_emp))
    for e, d, r in zip(ex_emp, ex_day, ex_rows, strict=True):
        _export(rng, w, cols, add_lookups, int(e), int(d), int(r), hours, out_region=False)
    # Reveals and refusals: rare.
    for kind, p in ((2, 0.01), (3, 0.008), (4, 0.02)):
        sel = rng.random(len(ed_emp)) < p
        k = int(sel.sum())
        cols["emp"].append(ed_emp[sel])
        cols["day"].append(ed_day[sel])
        cols["hour"].append(hours(ed_emp[sel]))
        cols["kind"].append(np.full(k, kind, dtype=np.int8))
        cols["cust"].append(_pick_customers(rng, w, w.emp_region[ed_emp[sel]], k))
        cols["ref"].append(np.full(k, -1, dtype=np.int64))
        cols["rows"].append(np.zeros(k, dtype=np.int64))
    _inject(rng, w, cols, add_lookups, hours, rate, insiders_per_kind)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    return w, out


def _export(
    rng: np.random.Generator,
    w: World,
    cols: dict[str, list[Any]],
    add: Any,
    e: int,
    d: int,
    rows: int,
    hours: Any,
    *,
    out_region: bool,
    night: bool = False,
) -> None:
    region = np.full(rows, w.emp_region[e])
    if out_region:
        region = (region + 1 + rng.integers(0, len(REGION_NAMES) - 1, rows)) % len(REGION_NAMES)
    hour = (
        np.full(rows, int(SHIFT_CENTER[REGION_NAMES[w.emp_region[e]]] + 12) % 24)
        if night
        else np.full(rows, int(hours(np.array([e]))[0]))
    )
    add(
        np.full(rows, e),
        np.full(rows, d),
        hour,
        _pick_customers(rng, w, region, rows),
        np.full(rows, -1, dtype=np.int64),
    )
    cols["emp"].append(np.array([e]))
    cols["day"].append(np.array([d]))
    cols["hour"].append(hour[:1])
    cols["kind"].append(np.array([1], dtype=np.int8))
    cols["cust"].append(np.array([-1]))
    cols["ref"].append(np.array([-1]))
    cols["rows"].append(np.array([rows]))


def _inject(
    rng: np.random.Generator,
    w: World,
    cols: dict[str, list[Any]],
    add: Any,
    hours: Any,
    rate: np.ndarray[Any, Any],
    per_kind: int,
) -> None:
    agents = np.flatnonzero(w.emp_role == 0)
    chosen = rng.choice(agents, per_kind * len(KINDS), replace=False)
    for i, e in enumerate(chosen):
        kind = KINDS[i % len(KINDS)]
        e = int(e)
        base = float(rate[e])
        if kind == "bulk_export":
            d = int(rng.integers(w.days // 2, w.days - 1))
            _export(rng, w, cols, add, e, d, int(rng.integers(1000, 5000)), hours, out_region=False)
            w.insiders.append((e, kind, [d]))
            continue
        span = {"slow_leak": (21, 35), "case_cover": (10, 15)}.get(kind, (5, 10))
        length = int(rng.integers(*span))
        start = int(rng.integers(w.days // 3, w.days - length))
        leak_days = [d for d in range(start, start + length) if d % 7 < 5]
        w.insiders.append((e, kind, leak_days))
        for d in leak_days:
            if kind == "slow_leak":  # a few more customers a day, no case
                k = max(4, int(rng.poisson(0.5 * base)))
            else:
                k = int(rng.integers(25, 60))
            em = np.full(k, e)
            own = np.full(k, w.emp_region[e])
            if kind == "out_of_region":
                region = (own + 1 + rng.integers(0, len(REGION_NAMES) - 1, k)) % len(REGION_NAMES)
            else:
                region = own
            cust = _pick_customers(rng, w, region, k)
            hour = hours(em)
            ref = np.full(k, -1, dtype=np.int64)
            if kind == "case_cover":  # cites the employee's own few cases, on other customers
                ref = rng.choice(cust[:3], k)
            if kind == "off_hours":
                hour = (hour + 12) % 24
                ref = np.where(rng.random(k) < 0.5, cust, -1)
            add(em, np.full(k, d), hour, cust, ref)


def load_synthetic(
    con: duckdb.DuckDBPyConnection, w: World, ev: dict[str, np.ndarray[Any, Any]]
) -> int:
    """``raw_events`` of the ledger's shape (text columns, JSON detail) and the side tables."""
    day0 = (START - date(1970, 1, 1)).days
    rng = np.random.default_rng(1)
    n = len(ev["emp"])
    secs = (day0 + ev["day"]) * 86400 + ev["hour"] * 3600 + rng.integers(0, 3600, n)
    gen = {  # noqa: F841  (scanned by DuckDB by name)
        "t": secs * 1_000_000 + rng.integers(0, 1_000_000, n),
        "emp": ev["emp"].astype(np.int64),
        "kind": ev["kind"].astype(np.int64),
        "cust": ev["cust"].astype(np.int64),
        "ref": ev["ref"].astype(np.int64),
        "nrows": ev["rows"].astype(np.int64),
        "team": w.emp_team[ev["emp"]].astype(np.int64),
    }
    con.execute("DROP TABLE IF EXISTS raw_events")
    con.execute("""
        CREATE TABLE raw_events AS
        SELECT row_number() OVER (ORDER BY t) - 1 AS seq, t AS time_us,
            ['disclosure', 'employee_list', 'reveal_requested', 'reveal_viewed',
             'access_refused'][kind + 1] AS kind,
            'principal:' || emp AS actor,
            CASE WHEN cust >= 0 THEN 'customer:' || cust END AS subject,
            CASE WHEN ref >= 0 THEN 'case-' || ref END AS ref,
            CASE kind
              WHEN 0 THEN '{"minted":false,"policies":["employee-case"],"principal":'
                          || '"principal:' || emp || '","team":"t' || team || '"}'
              WHEN 1 THEN '{"canaries":2,"country":null,"export":true,"rows":' || nrows
                          || ',"scope":"all","withheld":0}'
              WHEN 4 THEN '{"code":"limit-exceeded","reason":"daily limit"}'
              ELSE '{"request":1}' END AS detail
        FROM gen ORDER BY t""")
    roles = np.array(["agent", "lead", "analyst"], dtype=object)
    emps = {  # noqa: F841
        "employee_id": np.arange(w.employees, dtype=np.int64),
        "team": np.array([f"t{t}" for t in w.emp_team], dtype=object),
        "role": roles[w.emp_role],
        "region": np.array([REGION_NAMES[r] for r in w.emp_region], dtype=object),
    }
    custs = {  # noqa: F841
        "customer_id": np.arange(w.customers, dtype=np.int64),
        "country": w.cust_country,
    }
    con.execute("CREATE OR REPLACE TABLE employees AS SELECT * FROM emps")
    con.execute("CREATE OR REPLACE TABLE customers AS SELECT * FROM custs")
    con.execute(
        "CREATE OR REPLACE TABLE cases AS SELECT 'case-' || customer_id AS external_id, "
        "customer_id FROM customers"
    )
    return n


def _employees_for(n: int, days: int) -> int:
    return max(60, int(n / (days * 13.8)))  # measured events per calendar employee-day


def speed_synthetic(console: Console, n: int, budget: float) -> dict[str, float]:
    days = 120
    t = time.perf_counter()
    w, ev = generate(11, _employees_for(n, days), days, max(50_000, n // 10), 2)
    con = duckdb.connect()
    rows = load_synthetic(con, w, ev)
    setup_s = time.perf_counter() - t
    t = time.perf_counter()
    con.execute("""SELECT count(*), max(seq), min(time_us), count(DISTINCT kind),
        sum(length(actor)), sum(length(subject)), sum(length(ref)), sum(length(detail))
        FROM raw_events""").fetchall()
    scan_s = time.perf_counter() - t
    t = time.perf_counter()
    report = run_duckdb_phase(con, AnomalyConfig(), budget_per_1000=budget)
    job_s = time.perf_counter() - t
    con.close()
    table = Table(
        title=f"SYNTHETIC table of the ledger's shape: {rows:,} access events, "
        f"{w.employees:,} employees, {days} days (set-up {setup_s:.1f} s, untimed)"
    )
    for col in ("measured", "seconds", "events/s", "note"):
        table.add_column(col)
    table.add_row(
        "bare DuckDB scan (peer)",
        f"{scan_s:.2f}",
        f"{rows / scan_s:,.0f}",
        "every column read once",
    )
    table.add_row(
        "anomaly job, DuckDB phase",
        f"{job_s:.2f}",
        f"{rows / job_s:,.0f}",
        f"features {report.timings['features_s']:.1f} s, scoring "
        f"{report.timings['scoring_s']:.1f} s; target <= 60 s",
    )
    table.add_row("ratio job / scan", f"{job_s / scan_s:.0f}x", "", "")
    console.print(table)
    console.print(
        f"  {report.employee_days:,} employee-days, {len(report.alerts)} alerts "
        f"({report.alerts_per_1000:.2f} per 1,000), threshold {report.threshold:.1f}"
    )
    return {"events": rows, "job_s": job_s, "scan_s": scan_s}


def _build_ledger(path: Path, n: int) -> tuple[Any, int]:
    """A real ledger of about n access entries through ``mailveil.ledger.append``."""
    from sqlalchemy.orm import Session

    import mailveil.ledger.append as ledger_append
    from mailveil.config import load_settings
    from mailveil.contacts.principals import create_principal
    from mailveil.db.migrate import upgrade
    from mailveil.db.session import make_engine
    from mailveil.ledger.events import Event
    from mailveil.ledger.signing import init_signing_key

    settings = load_settings(env={}, data_dir=path / "var", checkpoint_every_entries=1024)
    init_signing_key(settings)
    ledger = Ledger.load(settings)
    engine = make_engine(url=f"sqlite:///{path / 'ledger.db'}")
    upgrade(engine)
    days = 60
    w, ev = generate(5, _employees_for(n, days), days, 100_000, 1)
    day0 = (START - date(1970, 1, 1)).days
    order = np.lexsort((ev["hour"], ev["day"]))[:n]
    kinds = ("disclosure", "employee_list", "reveal_requested", "reveal_viewed", "access_refused")
    real_now = ledger_append.now_us
    with Session(engine) as s, s.begin():
        for e in range(w.employees):
            create_principal(
                s,
                kind="employee",
                external_id=f"e-{e}",
                attributes={
                    "team": f"t{w.emp_team[e]}",
                    "role": ["agent", "lead", "analyst"][w.emp_role[e]],
                    "region": REGION_NAMES[w.emp_region[e]],
                },
            )
    try:
        for start in range(0, len(order), 10_000):
            idx = order[start : start + 10_000]
            i0 = int(idx[0])
            at = ((day0 + int(ev["day"][i0])) * 86400 + int(ev["hour"][i0]) * 3600) * 1_000_000
            ledger_append.now_us = lambda at=at: at  # type: ignore[misc]
            events = []
            for i in idx:
                k, emp = int(ev["kind"][i]), int(ev["emp"][i]) + 1  # principal ids from 1
                cust, ref = int(ev["cust"][i]), int(ev["ref"][i])
                subject = f"customer:{cust}" if cust >= 0 else None
                reff = f"case-{ref}" if ref >= 0 else None
                if k == 0:
                    detail: dict[str, Any] = {
                        "principal": f"principal:{emp}",
                        "minted": False,
                        "policies": ["employee-case"],
                    }
                elif k == 1:
                    detail = {
                        "rows": int(ev["rows"][i]),
                        "withheld": 0,
                        "canaries": 0,
                        "scope": "all",
                        "country": None,
                        "export": True,
                    }
                else:
                    detail = {"code": "limit-exceeded"} if k == 4 else {"request": 1}
                events.append(
                    Event(kinds[k], f"principal:{emp}", subject, None, "support", reff, detail)
                )
            with Session(engine) as s, s.begin():
                ledger.append(s, events)
    finally:
        ledger_append.now_us = real_now  # type: ignore[misc]
    return engine, len(order)


def extraction(console: Console, n: int, budget: float) -> None:
    from mailveil.config import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        engine, rows = _build_ledger(Path(tmp), n)
        build_s = time.perf_counter() - t
        table = Table(
            title=f"REAL LEDGER (SQLite via mailveil.ledger.append, {rows:,} entries, "
            f"built in {build_s:.0f} s untimed): extraction into DuckDB"
        )
        for col in ("measured", "seconds", "rows/s"):
            table.add_column(col)
        db = str(engine.url.database)
        t = time.perf_counter()
        raw = sqlite3.connect(db)
        got = 0
        cur = raw.execute(
            "SELECT seq, time_us, kind, actor, subject, ref, detail "
            "FROM ledger_entries ORDER BY seq"
        )
        while batch := cur.fetchmany(100_000):
            got += len(batch)
        raw.close()
        peer_s = time.perf_counter() - t
        table.add_row(
            "bare sqlite3 fetch of the same columns (peer)", f"{peer_s:.2f}", f"{got / peer_s:,.0f}"
        )
        sql = (
            "SELECT seq, time_us, kind, actor, subject, ref, detail FROM ledger_entries "
            "WHERE seq > :lo ORDER BY seq"
        )
        methods: tuple[Any, ...] = ("numpy", "csv", "executemany")
        for method in methods:
            sample = rows if method != "executemany" else min(rows, 10_000)
            con = duckdb.connect()
            con.execute(
                "CREATE TABLE raw_events (seq BIGINT, time_us BIGINT, kind VARCHAR, "
                "actor VARCHAR, subject VARCHAR, ref VARCHAR, detail VARCHAR)"
            )
            t = time.perf_counter()
            copied = copy_rows(
                engine,
                con,
                "raw_events",
                RAW_COLUMNS,
                sql.replace("WHERE seq > :lo", "WHERE seq > :lo AND seq < :hi"),
                {"lo": -1, "hi": sample},
                method=method,
            )
            s = time.perf_counter() - t
            con.close()
            note = "" if sample == rows else f" (first {sample:,} rows only: too slow)"
            table.add_row(f"extraction, method {method}{note}", f"{s:.2f}", f"{copied / s:,.0f}")
        settings = load_settings(env={}, data_dir=Path(tmp) / "var")
        t = time.perf_counter()
        report = run_anomaly_job(engine, settings, budget_per_1000=budget)
        job_s = time.perf_counter() - t
        table.add_row(
            "whole job on this file (extract + DuckDB phase)",
            f"{job_s:.2f}",
            f"{rows / job_s:,.0f}",
        )
        console.print(table)
        console.print(
            f"  extract {report.timings['extract_s']:.1f} s, features "
            f"{report.timings['features_s']:.1f} s, scoring "
            f"{report.timings['scoring_s']:.1f} s; {report.employee_days:,} "
            "employee-days (no customers/cases tables in this file: region and case "
            "features read as unknown here)"
        )
        engine.dispose()


def recall(console: Console, seeds: int, budget: float) -> float:
    table = Table(
        title=f"RECALL at {budget:g} alerts per 1,000 employee-days (seeded synthetic "
        "marketplaces, 800 employees x 90 days, 2 insiders of each kind per seed)"
    )
    for col in ("kind", "insiders", "found", "recall", "median delay (days)"):
        table.add_column(col)
    found: dict[str, list[int]] = {k: [] for k in KINDS}
    total: dict[str, int] = dict.fromkeys(KINDS, 0)
    false_alerts, alerts, emp_days = 0, 0, 0
    for seed in range(seeds):
        w, ev = generate(100 + seed, 800, 90, 200_000, 2)
        con = duckdb.connect()
        load_synthetic(con, w, ev)
        report = run_duckdb_phase(
            con,
            AnomalyConfig(),
            since=START + timedelta(days=28),
            until=START + timedelta(days=89),
            budget_per_1000=budget,
        )
        con.close()
        hit = {(a.employee_id, (a.day - START).days) for a in report.alerts}
        insiders = {e for e, _, _ in w.insiders}
        for e, kind, leak_days in w.insiders:
            total[kind] += 1
            days_hit = [d for d in leak_days if (e, d) in hit]
            if days_hit:
                found[kind].append(min(days_hit) - min(leak_days))
        alerts += len(report.alerts)
        emp_days += report.employee_days
        false_alerts += sum(1 for a in report.alerts if a.employee_id not in insiders)
    n_found = sum(len(v) for v in found.values())
    n_total = sum(total.values())
    for k in KINDS:
        delays = sorted(found[k])
        med = f"{delays[len(delays) // 2]}" if delays else "-"
        table.add_row(
            k, str(total[k]), str(len(found[k])), f"{len(found[k]) / max(total[k], 1):.2f}", med
        )
    table.add_row(
        "all", str(n_total), str(n_found), f"{n_found / max(n_total, 1):.2f}", "target >= 0.90"
    )
    console.print(table)
    console.print(
        f"  {alerts} alerts over {emp_days:,} employee-days = "
        f"{1000 * alerts / max(emp_days, 1):.2f} per 1,000 (budget {budget:g}); "
        f"{false_alerts} on employees who were not insiders"
    )
    return n_found / max(n_total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="synthetic access events")
    parser.add_argument(
        "--ledger",
        type=int,
        default=0,
        help="real ledger entries (default: n / 10, at most 1,000,000)",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args()
    console = Console()
    speed_synthetic(console, args.n, args.budget)
    extraction(console, args.ledger or min(1_000_000, max(20_000, args.n // 10)), args.budget)
    recall(console, args.seeds, args.budget)


if __name__ == "__main__":
    main()
