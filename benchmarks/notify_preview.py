"""Preview (the dry run: every recipient's eligibility, suppressions, caps, samples) of a huge
audience, beside a bare SQL join of the same tables, in one run, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/notify_preview.py                  # 10,000,000, both DBs
    .venv/bin/python benchmarks/notify_preview.py --n 1000000      # quicker
    .venv/bin/python benchmarks/notify_preview.py --db sqlite      # one database
    .venv/bin/python benchmarks/notify_preview.py --quick          # 20,000

Set-up (untimed), per database (SQLite under a temp dir; PostgreSQL in a private schema of
``$MAILVEIL_BENCH_PG_URL``, default the tests' 127.0.0.1 ``test`` database, dropped at the
end): ``--n`` customers inserted by one SQL statement (synthetic ciphertexts under the
vault's real data key: a preview never decrypts an address), 2 % with ``registry.created`` +
``registry.gift_purchased`` facts (executemany), ANALYZE, the registry-gift template of the
notify tests.

Timed: ``sends.preview`` over an explicit audience naming every customer (a generator: the
caller holds nothing; making the entries is counted in the preview's time), at ``--n / 10``
and at ``--n`` recipients, so the peak memory can be compared across a tenfold audience;
then the same preview of the segment audience, a fact query (``{"query": {"kind":
"registry.gift_purchased"}}``: every gift holder, each entry naming its fact as evidence);
then the peer: customers LEFT JOIN their facts of the rule's kinds, streamed in batches of
the same size (fetchmany; a server-side cursor on PostgreSQL), counting who has a gift. The
preview is set-based (``notify.eligibility``): one statement a batch decides who lacks the
facts, only the holders are evaluated one by one; on PostgreSQL the audience after the first
batch goes into a temporary table by COPY (a row a batch) and is joined once, hashed into
counts by reason (``notify.bulk``).
Peak memory is this process's VmHWM, reset before each phase (benchmarks/_memory.py).
Targets: preview of 10,000,000 recipients <= 60 s and <= 3 x the bare join (both audiences),
memory bounded by the batch size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _memory import reset_peak_rss, rss_mib
from mailveil.notify import sends
from mailveil.notify.audience import FactQuery, query_entries
from notify_glitch import (  # the same world, loaders and audience
    World,
    close_world,
    everyone,
    gifted,
    kit,
    load_customers,
    load_facts,
    open_world,
    pg_reachable,
    register_templates,
    verdict,
)

TARGET_SECONDS = 60.0
TARGET_RATIO = 3.0
TARGET_N = 10_000_000
PG_URL = os.environ.get(
    "MAILVEIL_BENCH_PG_URL",
    os.environ.get("MAILVEIL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
BARE_SQL = """SELECT c.id, c.external_id, c.deleted_at, f.kind, f.occurred_at, f.attributes
    FROM customers c LEFT JOIN notify_facts f
      ON f.customer_id = c.id AND f.kind IN ('registry.created', 'registry.gift_purchased')
    WHERE c.id BETWEEN 1 AND {n}"""


def bare_join_sqlite(db: Path, n: int, batch: int) -> tuple[int, int]:
    """(rows read, customers with a gift fact): the floor any eligibility check pays."""
    conn = sqlite3.connect(db)
    try:
        return _stream(conn.execute(BARE_SQL.format(n=int(n))), batch)
    finally:
        conn.close()


def bare_join_pg(url: str, schema: str, n: int, batch: int) -> tuple[int, int]:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with (
        psycopg.connect(conninfo, options=f"-csearch_path={schema}") as conn,
        conn.cursor(name="bare_join") as cursor,  # server-side: streamed
    ):
        cursor.execute(BARE_SQL.format(n=int(n)))
        return _stream(cursor, batch)


def _stream(cursor: Any, batch: int) -> tuple[int, int]:
    rows = with_gift = 0
    while True:
        part = cursor.fetchmany(batch)
        if not part:
            break
        rows += len(part)
        with_gift += sum(1 for r in part if r[3] == "registry.gift_purchased")
    return rows, with_gift


@dataclass
class Backend:
    name: str
    world: World
    bare: Callable[[int, int], tuple[int, int]]
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def open_sqlite(work: Path, n: int, batch: int) -> Backend:
    world = open_world(work, relay=False, notify_batch_size=batch)
    load_customers(world, n, sealed=False)
    with sqlite3.connect(world.db) as conn:
        conn.execute("ANALYZE")
    return Backend("SQLite", world, lambda m, b: bare_join_sqlite(world.db, m, b))


def open_pg(work: Path, n: int, batch: int) -> Backend:
    from sqlalchemy import text

    from mailveil.config import load_settings
    from mailveil.db.migrate import upgrade
    from mailveil.db.session import make_engine, make_session_factory

    schema = f"bench_preview_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url=PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url=PG_URL, connect_args={"options": f"-csearch_path={schema}"})

    def drop() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    try:
        upgrade(engine)
        settings = load_settings(env={}, data_dir=work / "var", log_json=False, log_level="error")
        settings = kit.notify_settings(settings, notify_min_stage_size=100,
                                       notify_batch_size=batch)  # fmt: skip
        gen = kit.open_env(settings, make_session_factory(engine), 0, relay=False)
        world = World(next(gen), gen, 0, work / "unused.db")
        vault = world.env.runtime.vault
        with world.env.session_factory() as s:
            probe = vault.seal(s, "probe@people.example", owner="probe")
            s.commit()
        with engine.begin() as conn:
            conn.execute(
                text(
                    """INSERT INTO customers (id, external_id, address_ct, address_dek,
                        address_bidx, country, opt_outs, sensitive_topics, is_canary,
                        created_at, updated_at)
                    SELECT i, 'c' || i, decode(md5(i::text) || md5(i::text), 'hex'), :dek,
                           decode(md5('b' || i), 'hex'), 'DE', '[]', '[]', false, now(), now()
                    FROM generate_series(1, :n) AS i"""
                ),
                {"dek": probe.dek_id, "n": n},
            )
            conn.execute(text("SELECT setval(pg_get_serial_sequence('customers', 'id'), :n)"),
                         {"n": n})  # fmt: skip
        world.n = n
    except BaseException:
        drop()
        raise
    backend = Backend("PostgreSQL", world, lambda m, b: bare_join_pg(PG_URL, schema, m, b))
    backend.cleanup.append(drop)
    return backend


def analyze(backend: Backend) -> None:
    from sqlalchemy import text

    with backend.world.env.session_factory() as s:
        s.execute(text("ANALYZE"))
        s.commit()


def run(backend: Backend, n: int, batch: int, console: Console) -> bool:
    world = backend.world
    t0 = time.perf_counter()
    numbers = gifted(n)
    load_facts(world, numbers)
    analyze(backend)
    gift, _ = register_templates(world)
    console.print(
        f"[bold]{backend.name}[/]: set-up (untimed) {n:,} customers, {2 * len(numbers):,} facts "
        f"in {time.perf_counter() - t0:.1f} s"
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
        rows.append((f"sends.preview, batch {batch:,}", size, seconds, base, peak,
                     f"eligible {shown['counts']['eligible']:,}"))  # fmt: skip
    # The segment audience: every customer with a gift fact (a FactQuery, each entry naming
    # its fact), over the same n customers.
    with env.session_factory() as s:
        base = rss_mib()
        reset_peak_rss()
        t0 = time.perf_counter()
        query = FactQuery("registry.gift_purchased", None, None, ())
        found = sends.preview(s, env.settings, gift, query_entries(s, query, batch),
                              source="segment")  # fmt: skip
        query_s = time.perf_counter() - t0
        peak = rss_mib("VmHWM")
    rows.append((f"sends.preview, fact query, batch {batch:,}", found["audience"], query_s,
                 base, peak, f"eligible {found['counts']['eligible']:,}"))  # fmt: skip
    base = rss_mib()
    reset_peak_rss()
    t0 = time.perf_counter()
    read, with_gift = backend.bare(n, batch)
    bare_s = time.perf_counter() - t0
    peak = rss_mib("VmHWM")
    rows.append(("peer: bare SQL join, fetchmany", n, bare_s, base, peak,
                 f"{read:,} rows, {with_gift:,} with a gift"))  # fmt: skip
    table = Table(title=f"{backend.name}: preview of a large audience ({n:,} customers, "
                  "2 % with a gift)")  # fmt: skip
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
    ratio = full_s / bare_s
    if n != TARGET_N:
        console.print(
            f"[yellow]scaled down: {n:,} recipients, not {TARGET_N:,}; at the measured rate "
            f"{TARGET_N:,} would take about {scaled:.0f} s[/]"
        )
    console.print(
        f"{backend.name}: preview / bare join: {ratio:.1f} x; preview counts {shown['counts']}, "
        f"would halt at first stage: {shown['would_halt_at_first_stage']}; fact query / bare "
        f"join: {query_s / bare_s:.1f} x, counts {found['counts']}"
    )
    targets = Table(title=f"{backend.name}: targets")
    for column in ("target", "measured", "met"):
        targets.add_column(column)
    targets.add_row(
        f"{TARGET_N:,} recipients <= {TARGET_SECONDS:.0f} s",
        f"{full_s:.1f} s for {n:,}" + ("" if n == TARGET_N else f" (~{scaled:.0f} s at 10M)"),
        verdict(scaled <= TARGET_SECONDS),
    )
    targets.add_row(
        f"preview <= {TARGET_RATIO:g} x the bare join (same run, same tables)",
        f"{full_s:.1f} s / {bare_s:.1f} s = {ratio:.1f} x",
        verdict(ratio <= TARGET_RATIO),
    )
    query_ratio = query_s / bare_s
    query_scaled = query_s * TARGET_N / n
    targets.add_row(
        f"fact-query preview (the segment: gift holders of the {n:,}) <= {TARGET_SECONDS:.0f} s "
        f"at 10M and <= {TARGET_RATIO:g} x the bare join",
        f"{query_s:.1f} s / {bare_s:.1f} s = {query_ratio:.1f} x"
        + ("" if n == TARGET_N else f" (~{query_scaled:.0f} s at 10M)"),
        verdict(query_ratio <= TARGET_RATIO and query_scaled <= TARGET_SECONDS),
    )
    # Bounded: ten times the audience may not cost more than a few batches' worth more.
    grew = full_mem - small_mem
    targets.add_row(
        "memory bounded by batch size (peak growth, 10x audience)",
        f"{small_mem:+.0f} MiB at {max(1, n // 10):,} -> {full_mem:+.0f} MiB at {n:,}",
        verdict(grew <= 32),
    )
    console.print(targets)
    # The preview must agree with the peer on who has a gift.
    return bool(shown["counts"]["eligible"] == with_gift == found["counts"]["eligible"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=TARGET_N, help="recipients in the audience")
    parser.add_argument("--batch", type=int, default=2000, help="notify_batch_size")
    parser.add_argument("--db", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--quick", action="store_true", help="20,000 recipients (the suite)")
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    if args.quick:
        args.n = 20_000
    console = Console(width=max(120, Console().width))
    wanted = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if "postgresql" in wanted and not pg_reachable(PG_URL):
        if args.db == "postgresql":
            console.print(f"[red]PostgreSQL unreachable at {PG_URL}[/]")
            return 1
        console.print(f"[yellow]PostgreSQL unreachable at {PG_URL}: SQLite only[/]")
        wanted.remove("postgresql")
    load = os.getloadavg()[0]
    console.print(f"{os.cpu_count()} CPUs, load average {load:.1f} at the start")
    ok = True
    for name in wanted:
        work = Path(tempfile.mkdtemp(prefix="mailveil-bench-preview-"))
        opener = open_sqlite if name == "sqlite" else open_pg
        backend = opener(work, args.n, args.batch)
        try:
            ok = run(backend, args.n, args.batch, console) and ok
        finally:
            close_world(backend.world)
            for step in backend.cleanup:
                with suppress(Exception):
                    step()
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
