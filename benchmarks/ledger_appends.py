"""Where the single ledger head row stops scaling: 1, 2, 4 and 8 processes appending at once.

    .venv/bin/python benchmarks/ledger_appends.py            # 5 s per run
    .venv/bin/python benchmarks/ledger_appends.py --quick    # 0.5 s per run (the suite's)

Every append goes through ``ledger.append`` on PostgreSQL, in a schema of its own
(``mv_bench_ledger_<random>``, dropped at the end): each transaction locks the one head row
(``SELECT ... FOR UPDATE``), inserts its entries and the Merkle tiles that complete, updates
the head and commits, with checkpoints signed every ``checkpoint_every_entries`` as in
production. Two batch sizes per process count: 1 entry per transaction (a lone message) and
16 (the relay's group commit under load, ``relay.journal``). Printed per run: entries/s,
transactions/s and commit latency (p50, p99), beside the peer figure: Tessera's ~2,900
appends/s per node (cited, not measured here; docs/scale.md). The ledger is verified at the
end (``verify_ledger``): concurrency must leave one chain.

Each process is a real OS process with its own connection; on a 2-core machine shared with
PostgreSQL, more than 2 processes measure contention, not extra cores (docs/scale.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text

from mailveil.config import Settings, load_settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner, init_signing_key
from mailveil.ledger.verify import verify_ledger

PG_URL = os.environ.get("MAILVEIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TESSERA_PER_NODE = 2_900  # appends/s, Tessera's published per-node figure (the peer)
PROCESSES = (1, 2, 4, 8)
BATCHES = (1, 16)


@dataclass(frozen=True)
class Run:
    processes: int
    batch: int
    entries: int
    transactions: int
    seconds: float
    latencies_ms: list[float]

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.seconds

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.seconds

    def quantile(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


def schema_engine(url: str, schema: str) -> Engine:
    return make_engine(url=url, connect_args={"options": f"-csearch_path={schema}"})


def event(worker: int, i: int) -> Event:
    return Event(
        kind="message",
        actor=f"principal:{worker}",
        subject=f"customer:{i}",
        alias=f"a{worker}x{i}@relay.mailveil.localhost",
        purpose="to_customer",
        ref="shipping",
        detail={"size": 2048, "sha256": "0" * 64, "relay_message": f"w{worker}m{i}"},
    )


def worker(
    url: str,
    schema: str,
    data_dir: str,
    n: int,
    batch: int,
    seconds: float,
    start: mp.synchronize.Barrier,
    out: mp.Queue[tuple[int, int, list[float]]],
) -> None:
    settings = load_settings(env={}, data_dir=Path(data_dir))
    ledger = Ledger.load(settings)
    engine = schema_engine(url, schema)
    factory = make_session_factory(engine)
    with factory() as session:  # connect before the clock starts
        session.execute(text("SELECT 1"))
    entries = transactions = 0
    latencies: list[float] = []
    start.wait()
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        with factory() as session:
            ledger.append(session, [event(n, entries + k) for k in range(batch)])
            session.commit()
        latencies.append((time.perf_counter() - now) * 1000)
        entries += batch
        transactions += 1
    engine.dispose()
    out.put((entries, transactions, latencies))


def run(
    url: str, schema: str, settings: Settings, processes: int, batch: int, seconds: float
) -> Run:
    # fork: a worker starts in milliseconds (the parent holds no open connection by then).
    ctx = mp.get_context("fork")
    start = ctx.Barrier(processes + 1)
    out: mp.Queue[tuple[int, int, list[float]]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(url, schema, str(settings.data_dir), n, batch, seconds, start, out),
        )
        for n in range(processes)
    ]
    for p in procs:
        p.start()
    start.wait(timeout=120)
    t0 = time.perf_counter()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    elapsed = max(time.perf_counter() - t0, seconds)
    for p in procs:
        p.join(timeout=30)
    latencies = [x for r in results for x in r[2]]
    return Run(
        processes,
        batch,
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        elapsed,
        latencies,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--quick", action="store_true", help="0.5 s per run (the suite's)")
    parser.add_argument("--database-url", default=PG_URL)
    args = parser.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    console = Console(width=120)
    schema = f"mv_bench_ledger_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url=args.database_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    try:
        with tempfile.TemporaryDirectory(prefix="mv-ledger-appends-") as tmp:
            settings = load_settings(env={}, data_dir=Path(tmp) / "var")
            init_signing_key(settings)
            engine = schema_engine(args.database_url, schema)
            upgrade(engine)
            engine.dispose()
            runs = [
                run(args.database_url, schema, settings, p, b, seconds)
                for b in BATCHES
                for p in PROCESSES
            ]
            report = verify_ledger(
                engine, settings, CheckpointSigner.load(settings).public_key, split=False
            )
            engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    table = Table(title=f"ledger appends on PostgreSQL, one head row ({seconds:g} s per run)")
    for column in (
        "processes", "entries/txn", "entries/s", "txn/s", "commit p50 ms", "commit p99 ms",
        "Tessera per node", "vs Tessera",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(
            str(r.processes),
            str(r.batch),
            f"{r.entries_per_s:,.0f}",
            f"{r.tx_per_s:,.0f}",
            f"{r.quantile(0.5):.2f}",
            f"{r.quantile(0.99):.2f}",
            f"{TESSERA_PER_NODE:,}",
            f"{r.entries_per_s / TESSERA_PER_NODE:.2f}x",
        )
    console.print(table)
    single = [r for r in runs if r.batch == 1]
    best = max(single, key=lambda r: r.entries_per_s)
    console.print(
        f"one entry per transaction: peak {best.entries_per_s:,.0f}/s at {best.processes} "
        f"process(es); 8 processes reach {single[-1].entries_per_s / single[0].entries_per_s:.2f}x"
        f" of one (the head row serialises every appender; median of per-run p50s "
        f"{statistics.median(r.quantile(0.5) for r in single):.2f} ms)"
    )
    console.print(
        f"ledger after the runs: {report.size:,} entries, "
        + ("one verified chain" if report.ok else f"NOT VALID: {report.reason}")
    )
    if not report.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
