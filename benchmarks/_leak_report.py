"""The leak-scenario benchmark's scores and report: the anomaly job over a scenario's ledger,
tables of leaks by kind and of the anomaly job's recall, and which seeds a run used
(``leak_scenarios.py`` runs the scenarios; this module scores and prints them)."""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

import _leak_framing as framing
from _leak_world import START, Leak
from mailveil.detect.anomalies import run_anomaly_job

EMPLOYEE_LEAKS = ("employee_export", "reveal_resale", "slow_leak", "case_cover")
BUDGETS = (0.5, 1.0, 2.0)
MIN_REPORTS = 20
# The anomaly job's features were tuned on these seeds only; HELD_OUT_SEEDS are reported.
TUNING_SEEDS = frozenset([*range(1, 13), *range(301, 313)])
HELD_OUT_SEEDS = frozenset(range(101, 113))


def anomalies(engine: Any, settings: Any, leaks: list[Leak], days: int) -> dict[str, Any]:
    """The anomaly job's alerts at each budget, and how many days after its start each
    insider leak was first flagged (None: never)."""
    out: dict[str, Any] = {"budgets": {}}
    since, until = START + timedelta(days=7), START + timedelta(days=days - 1)
    insiders = [lk for lk in leaks if lk.kind in EMPLOYEE_LEAKS]
    for b in BUDGETS:
        rep = run_anomaly_job(engine, settings, since=since, until=until, budget_per_1000=b)
        found = {}
        for lk in insiders:
            hits = [
                (a.day - START).days
                for a in rep.alerts
                if a.employee_id == lk.culprit
                and lk.start <= (a.day - START).days <= (lk.end or days) + 3
            ]
            found[lk.kind] = (min(hits) - lk.start) if hits else None
        out["budgets"][b] = {
            "found": found,
            "alerts": len(rep.alerts),
            "employee_days": rep.employee_days,
            "per_1000": rep.alerts_per_1000,
        }
    return out


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f} %)" if d else "-"


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def summarise(console: Console, results: list[dict[str, Any]]) -> bool:
    leaks = [leak for r in results for leak in r["leaks"]]
    table = Table(title=f"Leaks by kind over {len(results)} scenarios")
    for col in ("kind", "leaks", "culprit named", "exact", "median delay (days)", "sold (median)"):
        table.add_column(col)
    for kind in ("employee_export", "seller_resale", "reveal_resale", "slow_leak", "case_cover"):
        ks = [x for x in leaks if x["kind"] == kind]
        if not ks:
            continue
        table.add_row(
            kind,
            str(len(ks)),
            _pct(sum(x["named"] for x in ks), len(ks)),
            _pct(sum(x["exact"] for x in ks), len(ks)),
            _med([x["delay_days"] for x in ks if x["delay_days"] is not None]),
            _med([x["sold"] for x in ks]),
        )
    console.print(table)

    true_src = sum(r["true_sources"] for r in results)
    accused = sum(r["accused_sources"] for r in results)
    guilty = sum(r["guilty_sources"] for r in results)
    false_src = [(r["seed"], p) for r in results for p in r["false_sources"]]
    false_rcpt = [(r["seed"], p) for r in results for p in r["false_recipients"]]
    alias_leaks = [x for x in leaks if x["alias_based"]]
    real = [x for x in leaks if not x["alias_based"]]
    enough = [x for x in real if x["reports"] >= MIN_REPORTS]
    first = [x for x in enough if x["rank_at_20"] == 1]
    t = Table(title="Attribution")
    for col in ("measure", "value", "note"):
        t.add_column(col)
    t.add_row(
        "culprit precision", _pct(true_src, accused), "principals named as source that are guilty"
    )
    t.add_row("culprit recall", _pct(true_src, guilty), "guilty sources named")
    t.add_row("false accusations (source)", str(len(false_src)), f"{false_src[:6]}")
    t.add_row("false accusations (recipient)", str(len(false_rcpt)), f"{false_rcpt[:6]}")
    t.add_row(
        "alias leaks attributed exactly",
        _pct(sum(x["exact"] for x in alias_leaks), len(alias_leaks)),
        "",
    )
    t.add_row(
        "real-address: reports (median)", _med([x["reports"] for x in real]), "verified, per leak"
    )
    t.add_row(
        "real-address: named after N reports",
        _med([x["named_after_reports"] for x in real if x["named_after_reports"]]),
        f"named in {_pct(sum(x['named_after_reports'] is not None for x in real), len(real))}",
    )
    t.add_row(
        f"real-address: ranked 1st at {MIN_REPORTS} reports",
        _pct(len(first), len(enough)),
        f"ranks: {sorted(x['rank_at_20'] for x in enough)}",
    )
    console.print(t)

    outcomes: dict[str, int] = defaultdict(int)
    for r in results:
        for k, v in r["report_outcomes"].items():
            outcomes[k] += v
    console.print(f"  report outcomes: {dict(outcomes)}")
    for r in results:
        for line in r["false_detail"][:2]:
            console.print(f"  false accusation, seed {r['seed']}: {line}")
    framed = framing.summarise(console, results)
    ok_alias = len(false_src) + len(false_rcpt) == 0 and all(x["exact"] for x in alias_leaks)
    ok_recall = true_src == guilty
    ok_rank = bool(enough) and len(first) >= 0.95 * len(enough)
    with_framing = (
        "with framing on"
        if framed
        else "framing not recorded"
        if any(r.get("post_hoc") for r in results)
        else "framing off"
    )
    verdicts = [
        (f"every alias leak attributed exactly, zero false accusations ({with_framing})", ok_alias),
        ("every real leak's culprit named", ok_recall),
        (
            f"culprit ranked 1st in ≥ 95 % of real-address scenarios with ≥ {MIN_REPORTS} reports",
            ok_rank,
        ),
    ]
    verdicts.extend(anomaly_table(console, [r["anomaly"] for r in results]))
    for what, ok in verdicts:
        console.print(f"  target: {what}: {'PASS' if ok else 'FAIL'}")
    return all(ok for _, ok in verdicts)


def anomaly_table(console: Console, an: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The anomaly job's recall per budget, and its verdicts at 1 alert per 1,000."""
    t = Table(title="Anomaly job (run_anomaly_job) over the same ledgers")
    for col in (
        "budget /1000",
        "recall",
        "by kind",
        "alerts /1000 (realised)",
        "median delay (days)",
    ):
        t.add_column(col)
    recall_at_1, slow_at_1, slow_n = 0.0, 0, 0
    for b in BUDGETS:
        found = [(k, v) for a in an for k, v in a["budgets"][b]["found"].items()]
        hit = [v for _, v in found if v is not None]
        by_kind = {
            k: f"{sum(v is not None for kk, v in found if kk == k)}/"
            f"{sum(kk == k for kk, _ in found)}"
            for k in EMPLOYEE_LEAKS
            if any(kk == k for kk, _ in found)
        }
        alerts = sum(a["budgets"][b]["alerts"] for a in an)
        edays = sum(a["budgets"][b]["employee_days"] for a in an)
        t.add_row(
            f"{b:g}",
            _pct(len(hit), len(found)),
            str(by_kind),
            f"{1000 * alerts / max(edays, 1):.2f} ({alerts} in {edays:,} employee-days)",
            _med([float(v) for v in hit]),
        )
        if b == 1.0:
            recall_at_1 = len(hit) / max(len(found), 1)
            slow = [v for k, v in found if k == "slow_leak"]
            slow_at_1, slow_n = sum(v is not None for v in slow), len(slow)
    console.print(t)
    return [
        ("anomaly recall ≥ 0.9 at ≤ 1 alert per 1,000 employee-days", recall_at_1 >= 0.9),
        (
            f"slow leaks found at ≤ 1 alert per 1,000 employee-days: {slow_at_1}/{slow_n} (≥ 3/4)",
            slow_at_1 >= 0.75 * slow_n,
        ),
    ]


def parse_seeds(text: str) -> list[int]:
    """``1-12,301-312`` -> [1, ..., 12, 301, ..., 312]."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--seeds: {part!r} is not N or N-M") from None
        if last < first:
            raise argparse.ArgumentTypeError(f"--seeds: {part!r} runs backwards")
        seeds.extend(range(first, last + 1))
    return list(dict.fromkeys(seeds))


def _spans(seeds: list[int]) -> str:
    out: list[str] = []
    for n in sorted(seeds):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out) or "none"


def seed_split(seeds: list[int]) -> str:
    """Which seeds the anomaly job was tuned on and which it never saw while tuning."""
    tuning = [x for x in seeds if x in TUNING_SEEDS]
    held = [x for x in seeds if x in HELD_OUT_SEEDS]
    other = [x for x in seeds if x not in TUNING_SEEDS and x not in HELD_OUT_SEEDS]
    return (
        f"seeds: tuning {_spans(tuning)}; held out {_spans(held)}; "
        f"other (not used in tuning) {_spans(other)}"
    )
