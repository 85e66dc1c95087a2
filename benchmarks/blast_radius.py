"""Blast radius of one principal that saw 5,000,000 customers, beside a bare scan of the same rows.

    .venv/bin/python benchmarks/blast_radius.py                  # 10M customers, 100M aliases
    .venv/bin/python benchmarks/blast_radius.py --rows 30000000  # a smaller ledger
    .venv/bin/python benchmarks/blast_radius.py --quick          # 200k customers, 1M aliases

``blast_radius`` (``mailveil.incidents.blast``) never reads the ledger itself: it reads the
``aliases`` table (one row per disclosed (customer, principal) pair, the ledger's disclosures
folded) joined to ``customers``, plus ``reveal_requests``. So "a 100-million-entry ledger" is
at most 100 million alias rows, and that is the scale built here. The database is a real
mailveil SQLite file (schema from the Alembic migrations) filled with synthetic rows by
``INSERT ... SELECT`` over recursive CTEs (the dropable indexes dropped first and rebuilt after;
the UNIQUE constraints' automatic indexes stay, so rows go in key order to keep them appends),
cached in ``benchmarks/.cache/`` (git-ignored) and reused by later runs. It refuses to build
without enough free disk (checked first).

The data: ``--customers`` customers (countries spread over 20 codes, one in 997 a canary, one in
1009 since deleted); ``rows / customers`` aliases each (rows are written customer by customer,
so the culprit's rows are spread evenly through the table), held by 20,000 other principals and
the culprit, an employee that holds ``--culprit-aliases`` of them (every ``customers / culprit``-th
customer) and viewed 10,000 real addresses through reveals (1,000 of them customers it holds no
alias of).

Timed, in the same run on the same file, each twice (the first pass warms the page cache; the
table shows both): ``blast_radius(session, [culprit])`` (every exposure streamed, counts by
country and region) and the peer, a bare ``SELECT customer_id, country FROM aliases JOIN
customers ... WHERE principal_id = ?`` fetched and counted by country in Python. Peak memory:
RSS high-water mark (VmHWM, reset per phase) and, in a separate untimed pass, tracemalloc's
peak of Python allocations. The plan SQLite chose for blast_radius's own statement is printed.
Target: ≤ 10 s for 5M affected customers in a 100-million-entry ledger.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import event
from sqlalchemy.orm import Session

from _memory import reset_peak_rss, rss_mib
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine
from mailveil.incidents.blast import blast_radius

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
OTHERS = 20_000  # principals besides the culprit
CULPRIT = 1
BYTES_PER_ALIAS = 280  # aliases table + its 4 indexes (~220 measured), with margin
BYTES_PER_CUSTOMER = 250  # customers table + its 3 indexes, with margin
REVEALS = 10_000
TARGET_S = 10.0
NOW = "2026-06-01 00:00:00.000000"
COUNTRIES = "DEFRUSGBITESNLPLSECACHBRINJPAUATBEIEPTNO"  # 20 two-letter codes
BATCH = 1_000_000  # customers per INSERT ... SELECT (one progress step)


def _db_path(customers: int, rows: int, culprit: int) -> Path:
    return CACHE / f"blast_{customers}c_{rows}a_{culprit}x.db"


def _droppable_indexes(con: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """(name, DDL) of the explicit indexes; the UNIQUE constraints' autoindexes cannot go."""
    return list(
        con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        )
    )


def _series(lo: int, hi: int) -> str:
    return f"WITH RECURSIVE c(x) AS (SELECT {lo} UNION ALL SELECT x + 1 FROM c WHERE x < {hi}) "


def build(path: Path, customers: int, rows: int, culprit_n: int, console: Console) -> None:
    """A fresh migrated file, then synthetic rows in bulk (untimed)."""
    need = rows * BYTES_PER_ALIAS + customers * BYTES_PER_CUSTOMER
    CACHE.mkdir(exist_ok=True)
    free = shutil.disk_usage(CACHE).free
    if need > free * 0.8:
        raise SystemExit(
            f"error: building {customers:,} customers and {rows:,} aliases needs about "
            f"{need / 1e9:.1f} GB; {free / 1e9:.1f} GB free in {CACHE}. Pass a smaller --rows."
        )
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    engine = make_engine(url=f"sqlite:///{tmp}")
    upgrade(engine)
    engine.dispose()
    per = rows // customers
    step = customers // culprit_n  # every step-th customer is held by the culprit
    con = sqlite3.connect(tmp, isolation_level=None)
    for pragma in (
        "journal_mode = OFF",
        "synchronous = OFF",
        "cache_size = -2000000",
        "temp_store = FILE",
        "threads = 4",
    ):
        con.execute(f"PRAGMA {pragma}")
    saved = {t: _droppable_indexes(con, t) for t in ("aliases", "customers")}
    for idx in saved.values():
        for name, _ddl in idx:
            con.execute(f"DROP INDEX {name}")
    con.execute("BEGIN")
    con.execute(
        "INSERT INTO principals (id, kind, external_id, display_name, status, attributes, "
        "created_at, updated_at) VALUES (?, 'employee', 'e-culprit', 'Bulk Exporter', "
        '\'active\', \'{"team": "t0", "role": "agent", "region": "EU"}\', ?, ?)',
        (CULPRIT, NOW, NOW),
    )
    con.execute(
        _series(1, OTHERS) + "INSERT INTO principals (id, kind, external_id, display_name, "
        "status, attributes, created_at, updated_at) SELECT x + 1, 'seller', 's-' || x, "
        "'Shop ' || x, 'active', '{}', ?, ? FROM c",
        (NOW, NOW),
    )
    slots = " UNION ALL ".join(f"SELECT {k}" for k in range(per))
    with _progress(console) as progress:
        task = progress.add_task("customers", total=customers)
        for lo in range(1, customers + 1, BATCH):
            hi = min(customers, lo + BATCH - 1)
            # Monotone keys (external_id, address_bidx): the unique autoindexes grow by appends.
            con.execute(
                _series(lo, hi) + "INSERT INTO customers (id, external_id, address_ct, "
                "address_dek, address_bidx, country, opt_outs, sensitive_topics, is_canary, "
                "created_at, updated_at, deleted_at) SELECT x, printf('c-%010d', x), "
                "zeroblob(16), 'k1', CAST(printf('%016x', x) AS BLOB), "
                "substr(?, 1 + 2 * ((x + x / 20) % 20), 2), '[]', '[]', x % 997 = 0, ?, ?, "
                "CASE WHEN x % 1009 = 0 THEN ? END FROM c",
                (COUNTRIES, NOW, NOW, NOW),
            )
            progress.update(task, advance=hi - lo + 1)
        task = progress.add_task("aliases", total=customers * per)
        for lo in range(1, customers + 1, BATCH):
            hi = min(customers, lo + BATCH - 1)
            # Slot 0 of every step-th customer is the culprit's; the others' principals are
            # distinct per customer ((x + k) % OTHERS differs for k < OTHERS). CROSS JOIN keeps
            # customers the outer loop: ids ascend, so the table and autoindexes grow by appends.
            con.execute(
                _series(lo, hi) + f", s(k) AS ({slots}) "
                "INSERT INTO aliases (id, customer_id, principal_id, address, reverse_address, "
                "created_at) SELECT (x - 1) * ? + k + 1, x, "
                "CASE WHEN k = 0 AND x % ? = 0 AND x / ? <= ? THEN ? "
                "ELSE 2 + (x + k) % ? END, "
                "printf('a%010x@relay.example', (x - 1) * ? + k + 1), "
                "printf('r%010x@relay.example', (x - 1) * ? + k + 1), ? FROM c CROSS JOIN s",
                (per, step, step, culprit_n, CULPRIT, OTHERS, per, per, NOW),
            )
            progress.update(task, advance=(hi - lo + 1) * per)
        # Reveals by the culprit: 9,000 customers it also holds an alias of, 1,000 it does not.
        task = progress.add_task("cases, reveals", total=2)
        picks = [step * (i + 1) for i in range(REVEALS - 1000)]
        picks += [step * (i + 1) + 1 for i in range(1000)] if step > 1 else []
        con.executemany(
            "INSERT INTO support_cases (id, external_id, customer_id, assignee_id, status, "
            "opened_at, updated_at) VALUES (?, ?, ?, ?, 'closed', ?, ?)",
            [(i + 1, f"k-{i}", c, CULPRIT, NOW, NOW) for i, c in enumerate(picks)],
        )
        progress.update(task, advance=1)
        con.execute(
            "INSERT INTO reveal_requests (requester_id, customer_id, case_id, justification, "
            "status, approvals_required, approvals, views_allowed, views_used, version, "
            "created_at, expires_at, granted_at) SELECT assignee_id, customer_id, id, "
            "'customer asked us to confirm the address', 'used', 1, 1, 1, 1, 2, ?, ?, ? "
            "FROM support_cases",
            (NOW, NOW, NOW),
        )
        progress.update(task, advance=1)
        con.execute("COMMIT")
        task = progress.add_task("indexes", total=sum(len(v) for v in saved.values()))
        for idx in saved.values():
            for _name, ddl in idx:
                con.execute(ddl)
                progress.update(task, advance=1)
        con.execute("ANALYZE")
    con.close()
    tmp.rename(path)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
    )


def bare_scan(path: Path) -> tuple[int, Counter[str]]:
    """The peer: the culprit's alias rows joined to their customers, fetched and counted."""
    con = sqlite3.connect(path)
    by_country: Counter[str] = Counter()
    n = 0
    cur = con.execute(
        "SELECT aliases.customer_id, customers.country FROM aliases JOIN customers "
        "ON customers.id = aliases.customer_id WHERE aliases.principal_id = ?",
        (CULPRIT,),
    )
    while rows := cur.fetchmany(20_000):
        n += len(rows)
        by_country.update(country for _cid, country in rows)
    con.close()
    return n, by_country


def grouped(path: Path) -> Counter[str]:
    """Not a peer but a bound: the same counts by country computed inside SQLite."""
    con = sqlite3.connect(path)
    out: Counter[str] = Counter(
        dict(
            con.execute(
                "SELECT customers.country, count(*) FROM aliases JOIN customers "
                "ON customers.id = aliases.customer_id WHERE aliases.principal_id = ? "
                "AND NOT customers.is_canary GROUP BY customers.country",
                (CULPRIT,),
            ).fetchall()
        )
    )
    con.close()
    return out


def measure(fn: Callable[[], Any], traced: bool = False) -> tuple[float, float, float, Any]:
    """(seconds, RSS growth to peak in MiB, tracemalloc peak in MiB or nan, result)."""
    base = rss_mib()
    reset_peak_rss()
    if traced:
        tracemalloc.start()
    t = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t
    peak_py = float("nan")
    if traced:
        peak_py = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, rss_mib("VmHWM") - base, peak_py, result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=100_000_000, help="alias rows in all")
    parser.add_argument("--culprit-aliases", type=int, default=5_000_000)
    parser.add_argument(
        "--quick", action="store_true", help="200k customers, 1M aliases, culprit 100k"
    )
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    if args.quick:
        args.customers, args.rows, args.culprit_aliases = 200_000, 1_000_000, 100_000
    if not 0 < args.culprit_aliases <= args.customers <= args.rows:
        raise SystemExit("error: need 0 < --culprit-aliases <= --customers <= --rows")
    if args.rows // args.customers > OTHERS:
        raise SystemExit(f"error: at most {OTHERS:,} aliases per customer")
    console = Console()
    path = _db_path(args.customers, args.rows, args.culprit_aliases)
    if not path.exists():
        console.print(
            f"building {path.name} ({args.customers:,} customers, "
            f"{args.rows // args.customers * args.customers:,} aliases; cached for later runs)"
        )
        t = time.perf_counter()
        build(path, args.customers, args.rows, args.culprit_aliases, console)
        console.print(f"  built in {time.perf_counter() - t:.0f} s")
    con = sqlite3.connect(path)
    n_alias = int(con.execute("SELECT max(id) FROM aliases").fetchone()[0])
    n_cust = int(con.execute("SELECT max(id) FROM customers").fetchone()[0])
    n_culprit = int(
        con.execute("SELECT count(*) FROM aliases WHERE principal_id = ?", (CULPRIT,)).fetchone()[0]
    )
    con.close()
    size_gb = path.stat().st_size / 1e9

    engine = make_engine(url=f"sqlite:///{path}")
    statements: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(_conn: Any, _cur: Any, stmt: str, params: Any, _ctx: Any, _many: bool) -> None:
        statements.append((stmt, params))

    def run_blast() -> Any:
        with Session(engine) as session:
            return blast_radius(session, [CULPRIT])

    def run_bare() -> Any:
        return bare_scan(path)

    def run_grouped() -> Any:
        return grouped(path)

    # blast_radius runs twice (timed, then under tracemalloc); its first run follows a bare
    # scan of the same rows, so both read from a warm page cache.
    results: list[tuple[str, float, float]] = []
    out: dict[str, Any] = {}
    for label, fn in (
        ("bare scan (1st, cold)", run_bare),
        ("bare scan", run_bare),
        ("blast_radius", run_blast),
        ("SQL GROUP BY country", run_grouped),
    ):
        seconds, rss, _py, res = measure(fn)
        results.append((label, seconds, rss))
        out[label] = res
    traced = {}
    for label, fn in (("bare scan", run_bare), ("blast_radius", run_blast)):
        _s, _rss, py, _res = measure(fn, traced=True)
        traced[label] = py

    radius = out["blast_radius"]
    bare_n, bare_countries = out["bare scan"]
    alias_sql = next((s, p) for s, p in statements if "FROM aliases JOIN customers" in s)
    con = sqlite3.connect(path)
    plan = [r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + alias_sql[0], alias_sql[1])]
    expected = int(
        con.execute(
            "SELECT count(*) FROM customers WHERE NOT is_canary AND id IN (SELECT customer_id "
            "FROM aliases WHERE principal_id = ? UNION SELECT customer_id FROM reveal_requests "
            "WHERE requester_id = ? AND views_used > 0)",
            (CULPRIT, CULPRIT),
        ).fetchone()[0]
    )
    con.close()

    table = Table(
        title=f"Blast radius of one principal holding {n_culprit:,} aliases: {n_alias:,} aliases, "
        f"{n_cust:,} customers, {OTHERS + 1:,} principals, {REVEALS:,} reveals "
        f"(SQLite file {size_gb:.1f} GB)"
    )
    for col in ("measured", "seconds", "peak RSS growth MiB", "tracemalloc peak MiB", "rows"):
        table.add_column(col)
    for label, seconds, rss in results:
        if label == "blast_radius":
            rows = radius.customers
        elif label == "SQL GROUP BY country":
            rows = sum(out[label].values())
        else:
            rows = bare_n
        peak = f"{traced[label]:.1f}" if label in traced else ""
        table.add_row(label, f"{seconds:.2f}", f"{rss:.1f}", peak, f"{rows:,}")
    warm = results[2][1]
    peer = results[1][1]
    table.add_row("ratio blast_radius / bare scan", f"{warm / peer:.1f}x", "", "", "")
    console.print(table)
    console.print(f"  blast_radius's alias statement, SQLite plan: {' | '.join(plan)}")
    console.print(
        f"  radius: {radius.customers:,} customers ({radius.alias_only:,} alias only, "
        f"{radius.real_address:,} real address, {radius.deleted:,} since deleted); bare scan "
        f"{bare_n:,} rows ({len(bare_countries)} countries, canaries included); "
        f"regions {dict(sorted(radius.by_region.items()))}"
    )
    if radius.customers != expected:
        console.print(f"  [red]MISMATCH[/red]: expected {expected:,} affected customers")
    else:
        console.print(f"  count checked against plain SQL: {expected:,} affected customers")
    worst = warm
    full = n_alias >= 100_000_000 and n_culprit >= 5_000_000
    if full:
        verdict = "PASS" if worst <= TARGET_S else "FAIL"
        console.print(
            f"  target ≤ {TARGET_S:.0f} s (5M affected, 100M aliases): {verdict} "
            f"(blast_radius {worst:.2f} s)"
        )
    else:
        console.print(
            f"  target ≤ {TARGET_S:.0f} s is for 5M affected in 100M aliases; this run is "
            f"{n_culprit:,} in {n_alias:,}: blast_radius {worst:.2f} s "
            f"({'within' if worst <= TARGET_S else 'over'} the target at this size; not a verdict)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
