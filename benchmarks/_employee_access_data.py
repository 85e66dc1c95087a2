"""The employee_access benchmark's data set: built once with synthetic ciphertexts, cached in
``benchmarks/.cache/``, copied for each run (see employee_access.py for what is measured)."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings, load_settings
from mailveil.contacts.customers import create_customer
from mailveil.contacts.models import SupportCase
from mailveil.db.base import utcnow
from mailveil.db.migrate import head_revision, upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.signing import init_signing_key
from mailveil.vault import Vault, init_keys

HERE = Path(__file__).resolve().parent
BUILD_VERSION = 1  # bump when the synthetic data changes shape
SEED = 11
CASE_SHARE = 0.2  # pairs with an open case (allowed); the rest are denied
EXPORT_ROWS = 10_000
COUNTRIES = "FRDEGBESITNLPLSE"  # eight two-letter codes, picked by substr()
TEAMS = 500
ROLES = ("agent", "agent", "agent", "senior_agent")
REGIONS = ("eu-west", "eu-central", "eu-north", "eu-south")
BATCH = 200_000
P, A = 999_999_937, 48_271  # i -> i*A mod P: unique 9-digit external ids, unrelated to row order


@dataclass
class Built:
    path: Path
    customers: tuple[int, int]  # id range of the synthetic customers
    employees: tuple[int, int]  # id range of the ordinary employees
    exporters: tuple[int, int]  # the two export employees
    open_cases: tuple[int, int]  # id range of the ordinary employees' open cases
    size_mib: float
    build_seconds: float


def required_bytes(customers: int) -> int:
    # cached file (~400 B a customer) + the run's copy + WAL and sort space, with margin
    return max(2 << 30, customers * 1500)


def check_disk(folder: Path, customers: int, console: Console) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    need = required_bytes(customers)
    if free < need:
        console.print(
            f"[red]refusing: {free / 2**30:.1f} GiB free under {folder}, this size needs about "
            f"{need / 2**30:.0f} GiB (cached database + the run's copy); free space or pass "
            "smaller --customers / --quick[/red]"
        )
        raise SystemExit(2)


def progress(console: Console, label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def build(
    settings: Settings, base: Path, customers: int, employees: int, console: Console
) -> dict[str, Any]:
    """The cached database (see the module doc); returns its manifest."""
    t0 = time.perf_counter()
    for leftover in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
        leftover.unlink(missing_ok=True)
    init_keys(settings)
    init_signing_key(settings)
    engine = make_engine(url=f"sqlite:///{base.as_posix()}")
    upgrade(engine)
    vault = Vault.open(settings)
    with make_session_factory(engine)() as session:
        # The one real row: makes the vault create (and store, wrapped) its data key.
        real = create_customer(
            session, vault, external_id="R000000001", email="bench.real@example.com", country="FR"
        )
        session.commit()
        dek, real_id = real.address_dek, real.id
    engine.dispose()

    rng = random.Random(SEED)
    now = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
    conn = sqlite3.connect(base, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-4000000", "temp_store=2"):
        conn.execute(f"PRAGMA {pragma}")  # a throw-away build: rebuilt whole if interrupted

    people = []
    for i in range(1, employees + 1):
        team = (i - 1) % TEAMS
        lead = i <= TEAMS
        attrs: dict[str, str] = {
            "team": f"support-{team:03d}",
            "role": "team_lead" if lead else ROLES[i % len(ROLES)],
            "region": REGIONS[team % len(REGIONS)],
        }
        if not lead and rng.random() < 0.8:
            attrs["manager"] = f"E{team + 1:06d}"
        people.append(
            ("employee", f"E{i:06d}", f"Agent {i}", "active", json.dumps(attrs), now, now)
        )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO principals (kind, external_id, display_name, status, attributes, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        people,
    )
    conn.execute("COMMIT")
    e_lo, e_hi = conn.execute("SELECT min(id), max(id) FROM principals").fetchone()
    exporters = (e_hi - 1, e_hi)
    ordinary = (e_lo, e_hi - 2)

    c_lo, c_hi = real_id + 1, real_id + customers
    insert_customers = f"""
        INSERT INTO customers (id, external_id, address_ct, address_dek, address_bidx, country,
            opt_outs, sensitive_topics, is_canary, created_at, updated_at, deleted_at)
        WITH RECURSIVE seq(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM seq WHERE i < :hi)
        SELECT i + {real_id}, 'C' || printf('%09d', (i * {A}) % {P}),
            randomblob(52 + abs(random()) % 12), :dek, randomblob(32),
            substr('{COUNTRIES}', 1 + 2 * (abs(random()) % 8), 2),
            CASE WHEN abs(random()) % 20 = 0 THEN '["marketing"]' ELSE '[]' END,
            '[]', 0, :now, :now, NULL
        FROM seq"""
    with progress(console, "customers (synthetic ciphertexts)") as bar:
        task = bar.add_task("customers", total=customers)
        for lo in range(1, customers + 1, BATCH):
            hi = min(customers, lo + BATCH - 1)
            conn.execute("BEGIN")
            conn.execute(insert_customers, {"lo": lo, "hi": hi, "dek": dek, "now": now})
            conn.execute("COMMIT")
            bar.update(task, completed=hi)

    # Open cases over the ordinary employees (1 per 10 customers), a quarter as many closed,
    # then 10,000 open cases on distinct customers for each export employee.
    n_open = max(1000, customers // 10)
    n_closed = n_open // 4
    insert_cases = f"""
        INSERT INTO support_cases (id, external_id, customer_id, assignee_id, status,
            opened_at, closed_at, updated_at)
        WITH RECURSIVE seq(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM seq WHERE i < :hi)
        SELECT i, 'K' || printf('%09d', i), {c_lo} + abs(random()) % {customers},
            {ordinary[0]} + abs(random()) % {ordinary[1] - ordinary[0] + 1}, :status, :now,
            CASE WHEN :status = 'closed' THEN :now END, :now
        FROM seq"""
    with progress(console, "support cases") as bar:
        task = bar.add_task("cases", total=n_open + n_closed + 2 * EXPORT_ROWS)
        for lo in range(1, n_open + n_closed + 1, BATCH):
            hi = min(n_open + n_closed, lo + BATCH - 1)
            for status, a, b in (
                ("open", lo, min(hi, n_open)),
                ("closed", max(lo, n_open + 1), hi),
            ):
                if a <= b:
                    conn.execute("BEGIN")
                    conn.execute(insert_cases, {"lo": a, "hi": b, "status": status, "now": now})
                    conn.execute("COMMIT")
            bar.update(task, completed=hi)
        picked = rng.sample(range(c_lo, c_hi + 1), 2 * EXPORT_ROWS)
        rows = []
        for k, cid in enumerate(picked):
            case_id = n_open + n_closed + 1 + k
            rows.append((case_id, f"K{case_id:09d}", cid, exporters[k % 2], now, now))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO support_cases (id, external_id, customer_id, assignee_id, status, "
            "opened_at, updated_at) VALUES (?, ?, ?, ?, 'open', ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        bar.update(task, completed=n_open + n_closed + 2 * EXPORT_ROWS)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return {
        "version": BUILD_VERSION,
        "head": head_revision(),
        "customers": [c_lo, c_hi],
        "employees": list(ordinary),
        "exporters": list(exporters),
        "open_cases": [1, n_open],
        "build_seconds": time.perf_counter() - t0,
    }


def prepare(args: argparse.Namespace, console: Console) -> tuple[Settings, Built]:
    folder = HERE / ".cache" / f"employee_access-{args.customers}c-{args.employees}e"
    check_disk(folder, args.customers, console)
    settings = load_settings(
        env={},
        data_dir=folder,
        employee_rows_per_hour=10**9,  # limits are charged and decided, never reached here
        employee_rows_per_day=10**9,
    )
    base = folder / "base.db"
    manifest_path = folder / "manifest.json"
    manifest: dict[str, Any] | None = None
    if manifest_path.exists() and base.exists() and not args.rebuild:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("version") != BUILD_VERSION:
            console.print("cached database is from another build of this benchmark: rebuilding")
            manifest = None
        elif manifest.get("head") != head_revision():
            # New migrations (other areas' tables, mostly): cheaper to apply than to rebuild.
            console.print(f"bringing the cached database from {manifest.get('head')} to head")
            engine = make_engine(url=f"sqlite:///{base.as_posix()}")
            upgrade(engine)
            engine.dispose()
            manifest["head"] = head_revision()
            manifest_path.write_text(json.dumps(manifest, indent=1))
    if manifest is None:
        manifest_path.unlink(missing_ok=True)
        console.print(
            f"building {args.customers:,} customers and {args.employees:,} employees in {base} "
            "(once; later runs reuse it)"
        )
        manifest = build(settings, base, args.customers, args.employees, console)
        manifest_path.write_text(json.dumps(manifest, indent=1))
    run_db = folder / "mailveil.db"
    for stale in (run_db, folder / "mailveil.db-wal", folder / "mailveil.db-shm"):
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    shutil.copyfile(base, run_db)  # every run starts from the pristine build
    console.print(
        f"database: {base.stat().st_size / 2**20:,.0f} MiB, built in "
        f"{manifest['build_seconds']:.0f} s; copied for this run in "
        f"{time.perf_counter() - t0:.1f} s (untimed). Customer ciphertexts are synthetic "
        "random bytes under one real data key: nothing in this benchmark decrypts them."
    )
    built = Built(
        run_db,
        tuple(manifest["customers"]),
        tuple(manifest["employees"]),
        tuple(manifest["exporters"]),
        tuple(manifest["open_cases"]),
        base.stat().st_size / 2**20,
        manifest["build_seconds"],
    )
    return settings, built


def sample_pairs(factory: sessionmaker[Session], built: Built, n: int, seed: int) -> list[Any]:
    """(customer, employee) pairs: CASE_SHARE from open cases, the rest drawn at random."""
    rng = random.Random(seed)
    with factory() as session:
        ids = [rng.randint(*built.open_cases) for _ in range(round(n * CASE_SHARE))]
        rows = session.execute(
            select(SupportCase.customer_id, SupportCase.assignee_id).where(SupportCase.id.in_(ids))
        )
        pairs = [(cid, eid) for cid, eid in rows]
    while len(pairs) < n:
        pairs.append((rng.randint(*built.customers), rng.randint(*built.employees)))
    rng.shuffle(pairs)
    return pairs


def add_cases(factory: sessionmaker[Session], built: Built, employee: int) -> None:
    """10,000 open cases on distinct random customers for ``employee`` (this run's copy)."""
    rng = random.Random(SEED + 2)
    now = utcnow()
    with factory() as session:
        top = session.scalar(select(func.max(SupportCase.id))) or 0
        picked = rng.sample(range(built.customers[0], built.customers[1] + 1), EXPORT_ROWS)
        session.execute(
            insert(SupportCase),
            [
                {
                    "id": top + 1 + k,
                    "external_id": f"P{top + 1 + k:09d}",
                    "customer_id": cid,
                    "assignee_id": employee,
                    "status": "open",
                    "opened_at": now,
                    "updated_at": now,
                }
                for k, cid in enumerate(picked)
            ],
        )
        session.commit()
