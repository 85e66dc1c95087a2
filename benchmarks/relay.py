"""The relay beside Postfix: the same 2 KB messages through mailveil and through Postfix, each
into an SMTP sink, in one run.

    .venv/bin/python benchmarks/relay.py                      # 2,000 messages, 8 connections
    .venv/bin/python benchmarks/relay.py --quick              # 150 messages (the suite's)
    .venv/bin/python benchmarks/relay.py --n 10000 --concurrency 16
    .venv/bin/python benchmarks/relay.py --profile            # also: where mailveil's time goes
    .venv/bin/python benchmarks/relay.py --scale-out          # also: relay processes x hosts
    .venv/bin/python benchmarks/relay.py --memory             # also: RSS, 10,000 vs 100,000 msgs
    .venv/bin/python benchmarks/relay.py --memory --memory-first 5000 --memory-n 25000
    .venv/bin/python benchmarks/relay.py --mixed              # also: relay p99 with the API loaded

Runs on SQLite and then PostgreSQL (a private database, dropped afterwards; ``--backends``
picks, ``--database-url`` names one database instead) and ends with issue 16's targets, each
with what was measured on each backend and its verdict -- "not measured" for those this run
does not measure (memory without ``--memory``, scale-out without ``--scale-out``, mixed API
load without ``--mixed``, which runs benchmarks/relay_mixed.py's supervisor mode) -- and the
load average while it ran: on a shared machine the figures are noisy. Every target at once:

    .venv/bin/python benchmarks/relay.py --memory --scale-out --mixed

``--scale-out`` (_relay_scaleout.py): `mailveil relay --workers N` with 1, 2 and 4 processes on this
host and, on PostgreSQL, 1 and 2 per host on a second host (a network namespace, _netns.py; a SQLite
file cannot be shared between hosts), against the one database, beside Postfix in the same run;
after each, nothing lost or doubled (the sink, relay_messages, the ledger's entries) and `mailveil
ledger verify` passes. Its 1- and 2-process cells are also the 8-connection target with
relay_workers = 1 and 2: Postfix runs several smtpd processes too. ``--memory`` (_relay_memory.py):
the relay process's RSS over a long stream of 1-200 KB messages, some multipart with attachments,
some hostile, read after each batch; ``--memory-trace`` adds a tracemalloc diff.

Set-up (untimed): a temporary data directory made by ``mailveil init`` (SQLite unless
``--database-url``), DKIM and VERP keys, ``--customers`` customers each with a shipped order
from one seller and a disclosed alias, and the seller's API key. A sink process runs two
aiosmtpd sinks; a private Postfix (tests/relay/postfix_harness.py: loopback only, no DNS)
relays into one; the mailveil relay runs in its own process (``RelayServer``, the code
``mailveil relay`` runs) with the other as its smarthost.

Timed, for each path after a warm-up: ``--concurrency`` client connections (aiosmtplib, in
this process) send ``--n`` messages between them, one transaction each. mailveil gets every
check: SMTP AUTH as the seller, the Cedar contact policy and the messaging policy (contact
reason, order status), parsing and rewriting, redaction of the seller's real address (each
body names it), DKIM signing (Ed25519 and RSA), the relay_messages row and the ledger entry,
before-queue delivery to the sink. Postfix gets the same bytes from the same clients.

Reported: messages/s end to end (first submission to the last message in the sink), the
submission rate, p50/p99 submission latency (MAIL to the 250 after DATA: for mailveil that
includes delivery to the sink, for Postfix only queueing) and end-to-end latency
(submission to arrival in the sink), and database round trips per message for mailveil
(SQLAlchemy ``before_cursor_execute`` plus commits and rollbacks, on the relay's engine).
``--profile`` samples the relay process with py-spy (if installed; cProfile of the event
loop thread otherwise) during the timed run and names the functions it spends time in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import event

from _cpu import self_cpu_seconds, tree_cpu_seconds
from _memory import rss_mib
from _relay_kit import (
    HARNESS,
    MESSAGE_BYTES,
    SELLER,
    Job,
    Result,
    initialise,
    message,
    percentile,
    print_cpu,
    seed,
    sink_main,
    timed_run,
)
from _relay_memory import LABEL as MEMORY_LABEL
from _relay_memory import memory
from _relay_profile import have_py_spy, py_spy, summarise_py_spy
from _relay_scaleout import not_measured, scale_out
from mailveil.config import Settings, load_settings


def relay_main(settings: Settings, conn: Connection, profile: bool) -> None:
    """The relay (RelayServer) with its engine's round trips counted; commands on ``conn``."""
    from mailveil.relay.context import RelayContext
    from mailveil.relay.dns import StaticResolver
    from mailveil.relay.server import RelayServer
    from mailveil.runtime import Runtime

    runtime = Runtime.open(settings)
    counts: Counter[str] = Counter()

    kinds: Counter[str] = Counter()

    @event.listens_for(runtime.engine, "before_cursor_execute")
    def _statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counts["statements"] += 1
        kinds[_statement_kind(statement)] += 1

    @event.listens_for(runtime.engine, "commit")
    def _commit(*_args: Any) -> None:
        counts["commits"] += 1

    @event.listens_for(runtime.engine, "rollback")
    def _rollback(*_args: Any) -> None:
        counts["rollbacks"] += 1

    # No DNS: the seller authenticates with SMTP AUTH, so SPF/DKIM lookups are not needed.
    ctx = RelayContext.load(runtime, resolver=StaticResolver({}))
    profiler: Any = None

    async def main() -> None:
        nonlocal profiler
        server = RelayServer(ctx)
        await server.start()
        # aiosmtpd warns about its own deprecated login_data on every AUTH: noise here.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        conn.send(server.port)
        loop = asyncio.get_running_loop()
        commands = ThreadPoolExecutor(1)  # not the default pool: that one runs DB work
        base: dict[str, int] = {}
        base_rss = rss_mib()
        snapshots: list[tracemalloc.Snapshot] = []
        while True:
            command = await loop.run_in_executor(commands, conn.recv)
            if command == "reset":
                counts.clear()
                kinds.clear()
                base = {"commits": server.journal.commits, "writes": server.journal.writes}
                base_rss = rss_mib()
                if profile and not have_py_spy():
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                conn.send(True)
            elif command == "stats":
                if profiler is not None:
                    profiler.disable()
                stats: dict[str, Any] = dict(counts)
                stats["journal_commits"] = server.journal.commits - base.get("commits", 0)
                stats["journal_writes"] = server.journal.writes - base.get("writes", 0)
                stats["rss_before_mib"] = base_rss
                stats["sent"] = server.smarthost.sent
                stats["kinds"] = kinds.most_common()
                stats["rss_mib"] = rss_mib()
                conn.send(stats)
            elif command == "trace-start":
                # Memory run (--memory-trace): Python allocations from here on, by line.
                tracemalloc.start(10)
                snapshots.append(tracemalloc.take_snapshot())
                conn.send(True)
            elif command == "trace-diff":
                conn.send(_trace_diff(snapshots[0], tracemalloc.take_snapshot()))
                tracemalloc.stop()
            elif command == "stop":
                break
        await server.stop()
        commands.shutdown()

    asyncio.run(main())
    if profiler is not None:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        conn.send(out.getvalue())
    else:
        conn.send("")


def _trace_diff(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 12) -> str:
    """Where Python memory grew between two snapshots, by source line (tracemalloc's own
    bookkeeping left out)."""
    skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(skip).compare_to(before.filter_traces(skip), "lineno")
    total = sum(s.size_diff for s in stats)
    lines = [f"tracemalloc in the relay process: Python allocations {total / 2**20:+.1f} MiB "
             "between the snapshots; largest growth by line:"]  # fmt: skip
    for stat in stats[:top]:
        frame = stat.traceback[0]
        lines.append(f"  {stat.size_diff / 1024:+10.0f} KiB {stat.count_diff:+8,} blocks  "
                     f"{frame.filename.split('/src/')[-1]}:{frame.lineno}")  # fmt: skip
    return "\n".join(lines)


_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)
_SUBQUERY = re.compile(r"\([^()]*\)")


def _statement_kind(statement: str) -> str:
    """``SELECT aliases``, ``INSERT ledger_entries``, ``BEGIN``: what a round trip did (the
    main table, subqueries left out)."""
    words = statement.split(None, 1)
    verb = words[0].upper() if words else "?"
    outer, previous = statement, ""
    while outer != previous:
        previous, outer = outer, _SUBQUERY.sub(" ", outer)
    table = _TABLE.search(outer)
    return f"{verb} {table.group(1)}" if table else verb


# -------------------------------------------------------------------------------- report


def report(
    console: Console, mv: Result, pf: Result, probes: list[Result], args: argparse.Namespace
) -> None:
    table = Table(title=f"relay: {mv.n:,} messages of {MESSAGE_BYTES} bytes, "
                  f"{args.concurrency} connections, {os.cpu_count()} CPUs")  # fmt: skip
    for column in ("", "msg/s end to end", "msg/s accepted", "submit p50 ms", "submit p99 ms",
                   "e2e p50 ms", "e2e p99 ms", "DB round trips/msg"):  # fmt: skip
        table.add_column(column, justify="right" if column else "left")
    for r in (mv, pf, *probes):
        table.add_row(
            r.name,
            f"{r.rate:,.0f}",
            f"{r.submit_rate:,.0f}",
            f"{percentile(r.submit_ms, 0.5):.1f}",
            f"{percentile(r.submit_ms, 0.99):.1f}",
            f"{percentile(r.e2e_ms, 0.5):.1f}",
            f"{percentile(r.e2e_ms, 0.99):.1f}",
            "-" if r.round_trips is None else f"{r.round_trips:.2f}",
        )
    console.print(table)
    if mv.detail:
        console.print(mv.detail)


Verdict = tuple[str, str, bool | None]  # target, measured, met (None: not measured)
NOT_MEASURED = "not measured"
MIXED_LABEL = "mixed load: relay p99 <= 1.5 x idle while the API is loaded"


def verdicts(
    mv: Result,
    pf: Result,
    probes: list[Result],
    concurrency: int,
    rss: tuple[float, float],
    memory_row: Verdict | None,
    scale_rows: list[Verdict],
    mixed_row: Verdict | None = None,
) -> list[Verdict]:
    """Every target of issue 16, as measured in this run (or said not to be)."""
    ratio = mv.rate / pf.rate
    p99 = percentile(mv.submit_ms, 0.99)
    rt = mv.round_trips or 0.0
    out: list[Verdict] = [
        (f"end to end >= 1.0 x Postfix, {concurrency} connections", f"{ratio:.2f} x "
         f"({mv.rate:,.0f} vs {pf.rate:,.0f} msg/s)", ratio >= 1.0),
    ]  # fmt: skip
    if probes:
        one, pf_one = probes
        r1, p50 = one.rate / pf_one.rate, percentile(one.submit_ms, 0.5)
        out.append(("one connection >= 0.5 x Postfix", f"{r1:.2f} x ({one.rate:,.0f} vs "
                    f"{pf_one.rate:,.0f} msg/s)", r1 >= 0.5))  # fmt: skip
    else:
        out.append(("one connection >= 0.5 x Postfix", NOT_MEASURED, None))
    out.append((f"submission p99 <= 50 ms, {concurrency} connections", f"{p99:.1f} ms", p99 <= 50))
    if probes:
        out.append(("submission p50 <= 5 ms, one connection", f"{p50:.1f} ms", p50 <= 5))
    else:
        out.append(("submission p50 <= 5 ms, one connection", NOT_MEASURED, None))
    out += [
        ("<= 3 database round trips per message", f"{rt:.2f}", rt <= 3),
        # The target is 100,000 mixed and hostile messages against 10,000 (--memory): not
        # this run's 2 KB stream, whose RSS is shown for what it is.
        memory_row or (MEMORY_LABEL, f"{NOT_MEASURED} (2 KB run: {rss[0]:.0f} -> "
                       f"{rss[1]:.0f} MiB; --memory measures it)", None),
        mixed_row or (MIXED_LABEL, f"{NOT_MEASURED} (--mixed measures it)", None),
        *scale_rows,
    ]  # fmt: skip
    return out


def print_verdicts(console: Console, runs: dict[str, list[Verdict]], note: str) -> None:
    table = Table(title="issue 16 targets", caption=note)
    table.add_column("target")
    for backend in runs:
        table.add_column(f"{backend}: measured")
        table.add_column("met")
    labels = [label for label, _, _ in next(iter(runs.values()))]
    for i, label in enumerate(labels):
        cells = [label]
        for rows in runs.values():
            _, value, ok = rows[i]
            cells += [value, "-" if ok is None else "[green]yes[/]" if ok else "[red]no[/]"]
        table.add_row(*cells)
    console.print(table)


# ---------------------------------------------------------------------------------- main


PG_URL = os.environ.get("MAILVEIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per path")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--probe", type=int, default=200, help="messages over one connection (unloaded latency)"
    )
    parser.add_argument(
        "--database-url", default="", help="one database instead of SQLite and PostgreSQL"
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--pg-url", default=PG_URL, help="server for a private database")
    parser.add_argument("--quick", action="store_true", help="a small run (the suite's)")
    parser.add_argument("--profile", action="store_true", help="profile the relay process")
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil), so a "
        "thread waiting for the GIL is not counted where it waits",
    )
    parser.add_argument(
        "--profile-raw", default="", help="with --profile: keep py-spy's raw stacks in this file"
    )
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="PostgreSQL: `mailveil relay --workers N` on one and two hosts (network namespaces)",
    )
    parser.add_argument(
        "--memory", action="store_true", help="relay RSS over a long mixed and hostile stream"
    )
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="also the mixed-load target: relay_mixed.py's supervisor mode (real `mailveil "
        "serve`, API loaded)",
    )
    parser.add_argument(
        "--sqlite-cache-mib",
        type=int,
        default=Settings.sqlite_cache_mib,
        help="the sqlite_cache_mib setting (each SQLite connection's page cache)",
    )
    parser.add_argument("--memory-n", type=int, default=100_000, help="--memory: messages")
    parser.add_argument(
        "--memory-first", type=int, default=10_000, help="--memory: the RSS compared against"
    )
    parser.add_argument("--memory-batch", type=int, default=2000, help="--memory: RSS read every")
    parser.add_argument(
        "--memory-hostile", type=float, default=0.1, help="--memory: share of hostile messages"
    )
    parser.add_argument(
        "--memory-hostile-limit",
        type=int,
        default=200 * 1024,
        help="--memory: size of the hostile corpus's at-the-limit attachments (25 MiB is the "
        "relay's own limit, relay_max_message_bytes)",
    )
    parser.add_argument(
        "--memory-trace",
        action="store_true",
        help="--memory: diff tracemalloc snapshots in the relay (slows it)",
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.warmup, args.probe, args.customers = 150, 20, 40, 50
        if "--memory-n" not in sys.argv:  # --quick --memory: a few batches, not 100,000
            args.memory_n, args.memory_first, args.memory_batch = 400, 200, 100
    console = Console(width=max(120, Console().width))
    runs: dict[str, list[Verdict]] = {}
    code = 0
    if args.database_url:
        targets = [(args.database_url.split(":")[0], args.database_url)]
    else:
        targets = [(b.strip(), "") for b in args.backends.split(",") if b.strip()]
    for backend, url in targets:
        console.rule(backend)
        if backend == "postgresql" and not url:
            with private_database(args.pg_url) as private:
                rc, rows = bench(args, private, console)
        else:
            rc, rows = bench(args, url, console)
        code = code or rc
        if rows and args.mixed:
            rows = [mixed(args, backend, url, console) if r[0] == MIXED_LABEL else r for r in rows]
        if rows:
            runs[backend] = rows
    if runs:
        load = os.getloadavg()[0]
        print_verdicts(
            console,
            runs,
            f"one run each, {args.n:,} messages; load average {load:.1f} on {os.cpu_count()} "
            "CPUs while measured (figures are noisy when it exceeds the CPU count)",
        )
    return code


def mixed(args: argparse.Namespace, backend: str, url: str, console: Console) -> Verdict:
    """The mixed-load target (--mixed): benchmarks/relay_mixed.py's supervisor mode -- the real
    `mailveil serve`, the relay's p99 on one connection idle and while its API clients run
    the API's mix -- on a fresh data directory (and a fresh private database)."""
    import relay_mixed  # it imports this module: only when asked

    options = relay_mixed.options(["--quick"] if args.quick else [])
    console.rule(f"{backend}: mixed load (relay_mixed.py, supervisor)")
    if backend == "postgresql" and not url:
        with private_database(args.pg_url) as private:
            run = relay_mixed.bench(options, private, "supervisor", console)
    else:
        run = relay_mixed.bench(options, url, "supervisor", console)
    return MIXED_LABEL, run.measured(), run.ratio() <= relay_mixed.TARGET


@contextlib.contextmanager
def private_database(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of its own for one run (dropped afterwards)."""
    from sqlalchemy import text

    from mailveil.db.session import make_engine

    name = f"mv_bench_relay_{os.getpid()}_{int(time.time())}"
    admin = make_engine(url=pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench(
    args: argparse.Namespace, database_url: str, console: Console
) -> tuple[int, list[Verdict]]:
    """One backend: the relay and Postfix side by side; exit code and the targets' verdicts."""
    backend_name = "postgresql" if database_url.startswith("postgres") else "sqlite"
    sys.path[:0] = [str(HARNESS), str(HARNESS.parent)]  # tests/relay, tests (smtp_kit)
    from postfix_harness import (  # type: ignore[import-not-found,unused-ignore]
        PostfixInstance,
        postfix_installed,
        postfix_version,
    )

    if not postfix_installed():
        console.print("postfix is not installed: run scripts/ensure-debian.sh")
        return 1, []
    work = Path(tempfile.mkdtemp(prefix="mailveil-bench-relay-"))
    postfix_root = Path(tempfile.mkdtemp(prefix="mailveil-bench-postfix-"))
    settings = load_settings(
        env={},
        data_dir=work / "var",
        database_url=database_url,
        relay_host="127.0.0.1",
        relay_allow_plain_auth_on_loopback=True,
        smarthost_host="127.0.0.1",
        smarthost_pool_size=max(1, args.concurrency),
        log_json=False,
        log_level="warning",
        sqlite_cache_mib=args.sqlite_cache_mib,
    ).with_overrides(relay_port=0)  # any free port; load_settings wants a real one
    ctx = mp.get_context("spawn")
    processes: list[Any] = []
    postfix: PostfixInstance | None = None
    try:
        t0 = time.perf_counter()
        initialise(settings, console)
        world = seed(settings, args.customers)
        console.print(
            f"set-up: {args.customers:,} customers with a shipped order and an alias "
            f"in {time.perf_counter() - t0:.1f} s (untimed)"
        )
        sinks, sink_end = ctx.Pipe()
        sink_proc = ctx.Process(target=sink_main, args=(sink_end,), daemon=True)
        sink_proc.start()
        processes.append(sink_proc)
        ports = sinks.recv()
        postfix = PostfixInstance(root=postfix_root, relay_port=ports["postfix"])
        postfix.start()
        relay, relay_end = ctx.Pipe()
        relay_settings = settings.with_overrides(smarthost_port=ports["mailveil"])
        relay_proc = ctx.Process(
            target=relay_main, args=(relay_settings, relay_end, args.profile), daemon=True
        )
        relay_proc.start()
        processes.append(relay_proc)
        relay_port = relay.recv()
        console.print(f"Postfix {postfix_version()} and the mailveil relay are up")

        def jobs(start: int, count: int, to_real: bool) -> list[Job]:
            out = []
            for i in range(start, start + count):
                alias, real = world.targets[i % len(world.targets)]
                out.append(Job(i, SELLER, real if to_real else alias, message(i, alias)))
            return out

        login = ("acme-bench", world.seller_key)
        warm = args.warmup
        timed_run("mailveil", relay_port, jobs(0, warm, False), args.concurrency, login, sinks)
        timed_run("postfix", postfix.port, jobs(0, warm, True), args.concurrency, None, sinks)

        common_cpu = {"client": self_cpu_seconds, "sink": lambda: tree_cpu_seconds(sink_proc.pid)}
        relay.send("reset")
        relay.recv()
        spy = None
        if args.profile and have_py_spy():
            raw = work / "py-spy.txt"
            spy = subprocess.Popen(
                [py_spy(), "record", "--pid", str(relay_proc.pid), "--format", "raw",
                 "--output", str(raw), "--rate", "200", "--threads", "--nonblocking",
                 *(["--gil"] if args.profile_gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attaches
        mv = timed_run(
            "mailveil", relay_port, jobs(warm, args.n, False), args.concurrency, login, sinks,
            {"server": lambda: tree_cpu_seconds(relay_proc.pid), **common_cpu},
        )  # fmt: skip
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(timeout=60)
        relay.send("stats")
        stats = relay.recv()
        sinks.send(("leaks", "mailveil"))
        leaks = sinks.recv()
        clean = True  # nothing lost or doubled in the memory and scale-out runs
        pf = timed_run(
            "postfix", postfix.port, jobs(warm, args.n, True), args.concurrency, None, sinks,
            {"server": lambda: tree_cpu_seconds(postfix.master_pid()), **common_cpu},
        )  # fmt: skip
        probes = []
        if args.probe:
            start = warm + args.n
            one = timed_run("mailveil", relay_port, jobs(start, args.probe, False), 1, login, sinks)
            two = timed_run("postfix", postfix.port, jobs(start, args.probe, True), 1, None, sinks)
            one.name, two.name = "mailveil, 1 connection", "postfix, 1 connection"
            probes = [one, two]
        trips = stats.get("statements", 0) + stats.get("commits", 0) + stats.get("rollbacks", 0)
        mv.round_trips = trips / args.n
        mv.detail = (
            f"mailveil database work over {args.n:,} messages: {stats.get('statements', 0):,} "
            f"statements, {stats.get('commits', 0):,} commits, {stats.get('rollbacks', 0):,} "
            f"rollbacks; journal: {stats['journal_commits']:,} group commits for "
            f"{stats['journal_writes']:,} writes. Seller address in delivered bytes: {leaks}.\n"
            "statements per message: "
            + ", ".join(f"{kind} {count / args.n:.2f}" for kind, count in stats["kinds"])
        )
        report(console, mv, pf, probes, args)
        print_cpu(console, mv, pf)
        rss = (float(stats.get("rss_before_mib", 0.0)), float(stats.get("rss_mib", 0.0)))
        console.print(
            f"submission latency (ms): mailveil mean {statistics.mean(mv.submit_ms):.1f}, "
            f"Postfix mean {statistics.mean(pf.submit_ms):.1f}"
        )
        next_id = warm + args.n + args.probe
        memory_row = None
        if args.memory:
            console.rule(f"{backend_name}: memory")
            memory_row = memory(
                args, world, relay, relay_proc.pid, relay_port, sinks, next_id, console
            )
            next_id += args.memory_n
            clean = clean and "PROBLEMS" not in memory_row[1]
        scale_rows = not_measured(NOT_MEASURED, args.concurrency)
        if args.scale_out:
            console.rule(f"{backend_name}: scale-out")
            scale_rows, ok = scale_out(
                args, relay_settings, world, sinks, postfix.port, next_id, console
            )
            clean = clean and ok
        rows = verdicts(mv, pf, probes, args.concurrency, rss, memory_row, scale_rows)
        relay.send("stop")
        relay_proc.join(timeout=30)
        text = relay.recv() if relay.poll(5) else ""
        if args.profile:
            if spy is not None and (work / "py-spy.txt").exists():
                console.print(summarise_py_spy(work / "py-spy.txt"), markup=False)
                if args.profile_raw:  # one file per backend
                    shutil.copy(work / "py-spy.txt", f"{args.profile_raw}.{backend_name}")
            elif text:
                console.print("cProfile of the relay's event-loop thread:\n" + text, markup=False)
        sinks.send(("stop", ""))
        sinks.recv()
        return (1 if leaks or not clean else 0), rows
    finally:
        if postfix is not None:
            postfix.stop()
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(postfix_root, ignore_errors=True)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    raise SystemExit(main())
