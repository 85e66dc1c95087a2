"""The employee-access benchmark's figures and tables: latencies, export runs, and the
tables ``employee_access.py`` prints from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))]


@dataclass
class Latency:
    label: str
    seconds: list[float]
    note: str = ""


@dataclass
class Run:
    label: str
    seconds: float
    rows: int
    csv_bytes: int
    rss_peak_mib: float
    traced_peak_mib: float | None = None
    stages: dict[str, float] | None = None


def latency_table(rows: list[Latency], title: str) -> Table:
    table = Table(title=title)
    for col in ("what", "n", "p50 ms", "p99 ms", "max ms", "note"):
        table.add_column(col, justify="left" if col in ("what", "note") else "right")
    for lat in rows:
        s = lat.seconds
        table.add_row(
            lat.label,
            f"{len(s):,}",
            f"{pct(s, 0.50) * 1e3:.3f}",
            f"{pct(s, 0.99) * 1e3:.3f}",
            f"{max(s) * 1e3:.3f}",
            lat.note,
        )
    return table


def export_table(runs: list[Run], rows: int) -> Table:
    table = Table(title=f"Employee export, {rows:,} assigned customers (+ canaries)")
    for col in ("what", "seconds", "rows", "CSV bytes", "RSS peak Δ MiB", "tracemalloc MiB"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for run in runs:
        traced = "-" if run.traced_peak_mib is None else f"{run.traced_peak_mib:.1f}"
        table.add_row(
            run.label,
            f"{run.seconds:.3f}",
            f"{run.rows:,}",
            f"{run.csv_bytes:,}",
            f"{run.rss_peak_mib:.1f}",
            traced,
        )
    return table
