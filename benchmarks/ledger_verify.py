"""`ledger verify` over n entries, beside raw hashlib.sha256 over the same leaf bytes.

    .venv/bin/python benchmarks/ledger_verify.py            # 1,000,000 entries
    .venv/bin/python benchmarks/ledger_verify.py --n 20000  # quick run

Set-up (untimed, but its rate is printed): a temporary SQLite file filled through the real
``append`` path in batches of 10,000 events, one commit each, checkpoints every 1,024 entries.

Timed, in the same run:
- ``verify_ledger`` (chain, leaf hashes, Merkle tree, every checkpoint signature, stored
  subtree nodes, head, schema) split over two processes, as the CLI runs it on a ledger this
  big when a second core is free (this process checks the first half, a worker process the
  second); then in one process (reader thread on), then in one process and one thread;
- the peer: ``hashlib.sha256(leaf).digest()`` over exactly the bytes verify hashes per entry
  (0x00 || stored leaf), read from the same file in chunks of 10,000 (so the peer hashes
  cache-hot bytes, its best case); only the hashing is timed.

Each timed run is repeated ``--repeat`` times (default 3) and the fastest kept, for verify
and the peer alike: the figures are meant to show the code, not a neighbour's load.

Memory: peak RSS is reset (``/proc/self/clear_refs``) before each verify and RSS is sampled
through the progress callback; the worker reports its own peak (VmHWM).
Flat RSS from 10 % to 100 % of the entries, and peaks that move with ``--batch`` rather than
with n, show memory is bounded by the batch size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from _memory import reset_peak_rss, rss_mib
from mailveil.config import Settings, load_settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory, session_scope
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import init_signing_key
from mailveil.ledger.verify import VerifyReport, verify_ledger

BUILD_BATCH = 10_000
KINDS = ("disclosure", "disclosure", "disclosure", "message", "send", "disclosure_denied")


def events(start: int, count: int) -> list[Event]:
    out = []
    for j in range(start, start + count):
        kind = KINDS[j % len(KINDS)]
        out.append(
            Event(
                kind=kind,
                actor=f"principal:{j % 20_011}",
                subject=f"customer:{(j * 7919) % 3_000_017}",
                alias=f"k{(j * 2654435761) % 10**12:012d}x7m@relay.mailveil.localhost",
                purpose="order" if kind != "send" else "notification",
                ref=f"order:{j // 3}",
                detail={"policy": "seller-order-window", "decision": "deny"}
                if kind == "disclosure_denied"
                else {"decision": "allow"},
            )
        )
    return out


def build(settings: Settings, n: int, console: Console) -> tuple[Ledger, float]:
    init_signing_key(settings)
    ledger = Ledger.load(settings)
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("building ledger"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("build", total=n)
        for start in range(0, n, BUILD_BATCH):
            count = min(BUILD_BATCH, n - start)
            with session_scope(factory) as session:
                ledger.append(session, events(start, count))
            progress.update(task, completed=start + count)
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return ledger, n / elapsed


def timed_verify(
    settings: Settings,
    ledger: Ledger,
    n: int,
    batch: int,
    console: Console,
    label: str,
    **options: Any,
) -> tuple[VerifyReport, dict[int, float], float, float]:
    engine = make_engine(settings)
    samples: dict[int, float] = {}
    marks = [n * k // 10 for k in range(1, 11)]
    base = rss_mib()
    reset_peak_rss()
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("verify", total=n)

        def on_progress(done: int) -> None:
            progress.update(task, completed=done)
            while marks and done >= marks[0]:
                samples[marks.pop(0) * 100 // n] = rss_mib()

        report = verify_ledger(
            engine, settings, ledger.signer.public_key, progress=on_progress, batch=batch, **options
        )
    peak = rss_mib("VmHWM")
    engine.dispose()
    assert report.ok, report.problems
    return report, samples, base, peak


def raw_hashing(path: Path, n: int) -> tuple[float, int]:
    """Seconds spent in sha256 over 0x00 || leaf for every entry (reading is not timed)."""
    conn = sqlite3.connect(path)
    cur = conn.execute("SELECT CAST(x'00' || leaf AS BLOB) FROM ledger_entries ORDER BY seq")
    sha256 = hashlib.sha256
    spent, count, nbytes = 0.0, 0, 0
    while chunk := [row[0] for row in cur.fetchmany(BUILD_BATCH)]:
        t0 = time.perf_counter()
        digests = [sha256(leaf).digest() for leaf in chunk]
        spent += time.perf_counter() - t0
        count += len(digests)
        nbytes += sum(map(len, chunk))
    conn.close()
    assert count == n
    return spent, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="ledger entries")
    parser.add_argument("--batch", type=int, default=10_000, help="entries per verify batch")
    parser.add_argument(
        "--repeat", type=int, default=3, help="time each run this many times, keep the fastest"
    )
    args = parser.parse_args()
    console = Console(width=max(100, Console().width))
    with tempfile.TemporaryDirectory(prefix="mailveil-bench-") as tmp:
        settings = load_settings(env={}, data_dir=Path(tmp) / "var")
        ledger, build_rate = build(settings, args.n, console)
        db_path = settings.data_dir / "mailveil.db"
        size_mib = db_path.stat().st_size / 2**20
        small = max(1, args.batch // 10)
        runs: list[tuple[str, VerifyReport, dict[int, float], float, float, float]] = []
        for label, batch, options in [
            (f"split, batch {small:,}", small, {"split": True}),
            (f"split, batch {args.batch:,}", args.batch, {"split": True}),
            ("no split, reader thread", args.batch, {"split": False}),
            ("no split, one thread", args.batch, {"split": False, "threaded": False}),
        ]:
            tries = [
                timed_verify(settings, ledger, args.n, batch, console, label, **options)
                for _ in range(max(1, args.repeat))
            ]
            result = min(tries, key=lambda t: t[0].seconds)
            kib = result[0].worker_peak_rss_kib
            worker = kib / 1024 if kib is not None else float("nan")
            runs.append((label, *result, worker))
        raw_seconds, nbytes = min(
            (raw_hashing(db_path, args.n) for _ in range(max(1, args.repeat))),
            key=lambda t: t[0],
        )

    raw_rate = args.n / raw_seconds
    table = Table(title=f"ledger verify, {args.n:,} entries, SQLite ({size_mib:,.0f} MiB file)")
    for col in ("what", "procs", "seconds", "entries/s", "vs raw"):
        table.add_column(col, justify="right" if col != "what" else "left")
    table.add_row("raw sha256(0x00 || leaf)", "1", f"{raw_seconds:.2f}", f"{raw_rate:,.0f}", "100%")
    for label, report, *_rest in runs:
        rate = report.entries / report.seconds
        table.add_row(
            f"verify, {label}", str(report.processes), f"{report.seconds:.2f}", f"{rate:,.0f}",
            f"{rate / raw_rate:.0%}",
        )  # fmt: skip
    console.print(table)
    main_run = runs[1][1]
    console.print(
        f"average leaf {nbytes / args.n:.0f} bytes; {main_run.checkpoints:,} checkpoint "
        f"signatures and {main_run.nodes:,} stored subtree nodes checked; set-up append rate "
        f"{build_rate:,.0f} entries/s; {os.cpu_count()} CPUs"
    )

    mem = Table(title="Memory during verify (RSS, MiB; this process unless noted)")
    mem.add_column("run")
    mem.add_column("before", justify="right")
    for pct in (10, 50, 100):
        mem.add_column(f"at {pct} %", justify="right")
    mem.add_column("peak", justify="right")
    mem.add_column("worker peak", justify="right")
    for label, _report, samples, base, peak, worker in runs:
        cells = [f"{samples.get(p, float('nan')):.0f}" for p in (10, 50, 100)]
        mem.add_row(label, f"{base:.0f}", *cells, f"{peak:.0f}", f"{worker:.0f}")
    console.print(mem)
    ratio = (main_run.entries / main_run.seconds) / raw_rate
    verdict = "meets" if ratio >= 0.40 else "misses"
    console.print(
        f"verify split over two processes (the default when a core is free) at {ratio:.0%} of "
        "the raw hashing rate: "
        f"{verdict} the 40 % target"
    )


if __name__ == "__main__":
    main()
