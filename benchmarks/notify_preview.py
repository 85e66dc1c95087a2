"""Preview (the dry run: every recipient's eligibility, suppressions, caps, samples) of a huge
audience, beside a bare SQL join of the same tables, in one run.

    .venv/bin/python benchmarks/notify_preview.py               # 10,000,000 recipients
    .venv/bin/python benchmarks/notify_preview.py --n 1000000   # quicker
    .venv/bin/python benchmarks/notify_preview.py --quick       # 20,000: the suite's run

Set-up (untimed, SQLite under a temp dir): ``--n`` customers inserted by one SQL statement
(synthetic ciphertexts under the vault's real data key: a preview never decrypts an
address), 2 % with ``registry.created`` + ``registry.gift_purchased`` facts (executemany),
the registry-gift template of the notify tests.

Timed: ``sends.preview`` over an explicit audience naming every customer (a generator: the
caller holds nothing), at ``--n / 10`` and at ``--n`` recipients, so the peak memory can be
compared across a tenfold audience; then the peer: customers LEFT JOIN their facts of the
rule's kinds, streamed in batches of the same size with fetchmany, counting who has a gift.
Peak memory is this process's VmHWM, reset before each phase (benchmarks/_memory.py).
Target: preview of 10,000,000 recipients <= 60 s, memory bounded by the batch size.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _memory import reset_peak_rss, rss_mib
from mailveil.notify import sends
from notify_glitch import (  # the same world, loaders and audience
    close_world,
    everyone,
    gifted,
    load_customers,
    load_facts,
    open_world,
    register_templates,
    verdict,
)

TARGET_SECONDS = 60.0
TARGET_N = 10_000_000


def bare_join(db: Path, n: int, batch: int) -> tuple[int, int]:
    """(rows read, customers with a gift fact): the floor any eligibility check pays."""
    conn = sqlite3.connect(db)
    cursor = conn.execute(
        """SELECT c.id, c.external_id, c.deleted_at, f.kind, f.occurred_at, f.attributes
           FROM customers c LEFT JOIN notify_facts f
             ON f.customer_id = c.id AND f.kind IN ('registry.created', 'registry.gift_purchased')
           WHERE c.id BETWEEN 1 AND ?""",
        (n,),
    )
    rows = with_gift = 0
    while True:
        part = cursor.fetchmany(batch)
        if not part:
            break
        rows += len(part)
        with_gift += sum(1 for r in part if r[3] == "registry.gift_purchased")
    conn.close()
    return rows, with_gift


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=TARGET_N, help="recipients in the audience")
    parser.add_argument("--batch", type=int, default=2000, help="notify_batch_size")
    parser.add_argument("--quick", action="store_true", help="20,000 recipients (the suite)")
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    if args.quick:
        args.n = 20_000
    console = Console(width=max(120, Console().width))
    work = Path(tempfile.mkdtemp(prefix="mailveil-bench-preview-"))
    world = open_world(work, relay=False, notify_batch_size=args.batch)
    try:
        n = args.n
        t_cust = load_customers(world, n, sealed=False)
        numbers = gifted(n)
        t_facts = load_facts(world, numbers)
        gift, _ = register_templates(world)
        console.print(
            f"set-up (untimed): {n:,} customers (one INSERT ... SELECT) in {t_cust:.1f} s, "
            f"{2 * len(numbers):,} facts in {t_facts:.1f} s; SQLite {world.db}"
        )
        env = world.env
        rows: list[tuple[str, int, float, float, float, str]] = []
        results = {}
        for size in (max(1, n // 10), n):
            with env.session_factory() as s:
                base = rss_mib()
                reset_peak_rss()
                t0 = time.perf_counter()
                shown = sends.preview(s, env.settings, gift, everyone(size))
                seconds = time.perf_counter() - t0
                peak = rss_mib("VmHWM")
            results[size] = (seconds, peak - base, shown)
            rows.append((f"sends.preview, batch {args.batch:,}", size, seconds, base, peak,
                         f"eligible {shown['counts']['eligible']:,}"))  # fmt: skip
        base = rss_mib()
        reset_peak_rss()
        t0 = time.perf_counter()
        read, with_gift = bare_join(world.db, n, args.batch)
        seconds = time.perf_counter() - t0
        peak = rss_mib("VmHWM")
        rows.append(("peer: bare SQL join, fetchmany", n, seconds, base, peak,
                     f"{read:,} rows, {with_gift:,} with a gift"))  # fmt: skip
        table = Table(title=f"preview of a large audience ({n:,} customers, 2 % with a gift)")
        for column in ("path", "recipients", "seconds", "recipients/s", "RSS before MiB",
                       "peak MiB", "outcome"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("path", "outcome") else "right")
        for label, size, secs, before, top, outcome in rows:
            table.add_row(label, f"{size:,}", f"{secs:.1f}", f"{size / secs:,.0f}",
                          f"{before:,.0f}", f"{top:,.0f}", outcome)  # fmt: skip
        console.print(table)
        full_s, full_mem, shown = results[n]
        _small_s, small_mem, _ = results[max(1, n // 10)]
        scaled = full_s * TARGET_N / n
        if n != TARGET_N:
            console.print(
                f"[yellow]scaled down: {n:,} recipients, not {TARGET_N:,}; at the measured rate "
                f"{TARGET_N:,} would take about {scaled:.0f} s[/]"
            )
        console.print(
            f"preview / bare join: {full_s / seconds:.1f} x; preview counts {shown['counts']}, "
            f"would halt at first stage: {shown['would_halt_at_first_stage']}"
        )
        targets = Table(title="targets")
        for column in ("target", "measured", "met"):
            targets.add_column(column)
        targets.add_row(
            f"{TARGET_N:,} recipients <= {TARGET_SECONDS:.0f} s",
            f"{full_s:.1f} s for {n:,}" + ("" if n == TARGET_N else f" (~{scaled:.0f} s at 10M)"),
            verdict(scaled <= TARGET_SECONDS),
        )
        # Bounded: ten times the audience may not cost more than a few batches' worth more.
        grew = full_mem - small_mem
        targets.add_row(
            "memory bounded by batch size (peak growth, 10x audience)",
            f"{small_mem:+.0f} MiB at {max(1, n // 10):,} -> {full_mem:+.0f} MiB at {n:,}",
            verdict(grew <= 32),
        )
        console.print(targets)
        # The preview must agree with the peer on who has a gift (exits 1 otherwise).
        return 0 if shown["counts"]["eligible"] == with_gift else 1
    finally:
        close_world(world)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
