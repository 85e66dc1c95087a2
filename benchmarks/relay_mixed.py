"""The relay's latency while the API is loaded, as ``mailveil serve`` runs them.

Issue 16 (mixed load): "while the API serves its heaviest mix at full speed, the relay's p99
stays within 1.5x of its idle p99". Each mode starts the real ``mailveil serve`` command (a
subprocess, its settings in the environment, a fresh data directory) with an SMTP sink (its
own process) as the relay's smarthost:

- ``supervisor``: the default, the API and the relay in a process each (``api_nice`` as
  configured, 10 by default);
- ``supervisor-nice<N>``: the same with ``api_nice = N`` (``supervisor-nice0``: does
  lowering the API's priority help?);
- ``single-process``: ``mailveil serve --single-process``, both on one event loop.

A client sends ``--messages`` 2 KB messages over ``--connections`` SMTP connections (AUTH as
the seller, every check on, as in ``relay.py``) twice: with the API idle, then while
``--api-clients`` HTTP clients (a process of their own) hammer the API with
``api_load.py``'s mix (customer reads, disclosures, signed checkpoints). Printed per mode:
the relay's submission p50/p99 in both phases, the API's requests/s and p99 meanwhile, and
the verdict (loaded p99 <= 1.5 x idle p99).

    .venv/bin/python benchmarks/relay_mixed.py                  # SQLite and PostgreSQL
    .venv/bin/python benchmarks/relay_mixed.py --quick          # the suite's: small, SQLite
    .venv/bin/python benchmarks/relay_mixed.py --modes supervisor-nice0,supervisor,supervisor-nice10
    .venv/bin/python benchmarks/relay_mixed.py --api-clients 64 --messages 600

The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _relay_kit import Job, initialise, message, percentile, seed, sink_main, submit
from api_load import _free_port, _run_level, _wait_up, _world
from mailveil.config import Settings, load_settings
from relay import PG_URL, private_database

TARGET = 1.5
MODES = ("supervisor", "supervisor-nice<N>", "single-process")
MAILVEIL = Path(sys.executable).with_name("mailveil")


def start_serve(settings: Settings, mode: str, log: Path) -> subprocess.Popen[bytes]:
    """The real ``mailveil serve`` on ``settings``' ports and data, as an operator runs it."""
    flags = ["--single-process"] if mode == "single-process" else []
    extra = {"MAILVEIL_API_NICE": mode.removeprefix("supervisor-nice")} if "nice" in mode else {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    env.update(
        MAILVEIL_DATA_DIR=str(settings.data_dir), MAILVEIL_DATABASE_URL=settings.database_url,
        MAILVEIL_API_PORT=str(settings.api_port), MAILVEIL_RELAY_PORT=str(settings.relay_port),
        MAILVEIL_RELAY_ALLOW_PLAIN_AUTH_ON_LOOPBACK="true",
        MAILVEIL_SMARTHOST_PORT=str(settings.smarthost_port),
        MAILVEIL_SMARTHOST_POOL_SIZE=str(settings.smarthost_pool_size),
        MAILVEIL_LOG_LEVEL="warning", **extra,
    )  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(MAILVEIL), "serve", *flags], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop_serve(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=30)


def _wait_relay(port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the relay did not start") from None
            time.sleep(0.2)


def admin_key(settings: Settings) -> str:
    from mailveil.auth.keys import Role, issue_key
    from mailveil.db.session import session_scope
    from mailveil.runtime import Runtime

    runtime = Runtime.open(settings)
    with session_scope(runtime.session_factory) as session:
        token = issue_key(session, Role.ADMIN, label="mixed-load").token
    runtime.engine.dispose()
    return token


def api_load_main(base: str, token: str, clients: int, seconds: float, conn: Connection) -> None:
    """The API's clients, in a process of their own (their CPU is not the relay client's)."""
    plan = _world(base, token)
    conn.send("ready")
    conn.recv()  # go
    level = asyncio.run(_run_level(base, token, clients, seconds, plan))
    conn.send((level.seconds, list(level.latencies), dict(level.statuses)))


def relay_phase(
    port: int, jobs: list[Job], connections: int, login: tuple[str, str]
) -> list[float]:
    acks = submit(port, jobs, connections, login)
    return [(done - start) * 1000 for _, start, done in acks]


@dataclass
class Run:
    """One mode's figures on one backend."""

    mode: str
    idle: list[float]
    loaded: list[float]
    relay_seconds: float
    api_rate: float
    api_latencies: list[float]
    statuses: dict[int, int]
    load_avg: float

    def ratio(self) -> float:
        return percentile(self.loaded, 0.99) / max(percentile(self.idle, 0.99), 1e-9)

    def measured(self) -> str:
        """The target's figures in a few words (relay.py --mixed's verdict row)."""
        return (
            f"{self.ratio():.2f} x ({percentile(self.loaded, 0.99):.1f} vs "
            f"{percentile(self.idle, 0.99):.1f} ms idle; {self.mode}, API {self.api_rate:,.0f} "
            "req/s)"
        )

    def verdict(self) -> str:
        met = self.ratio() <= TARGET
        return (
            f"{self.mode}: relay p99 under API load {percentile(self.loaded, 0.99):.1f} ms vs "
            f"idle {percentile(self.idle, 0.99):.1f} ms = {self.ratio():.2f} x (target <= "
            f"{TARGET} x): {'met' if met else 'NOT met'}; API {self.api_rate:,.0f} req/s; "
            f"load average {self.load_avg:.1f} on {os.cpu_count()} CPUs"
        )


def bench(args: argparse.Namespace, database_url: str, mode: str, console: Console) -> Run:
    """One mode on a fresh data directory (and ``database_url``): serve started, both
    phases run, serve stopped."""
    work = Path(tempfile.mkdtemp(prefix="mailveil-bench-mixed-"))
    ctx = mp.get_context("spawn")
    processes: list[Any] = []
    server: subprocess.Popen[bytes] | None = None
    log = work / "serve.log"
    try:
        sinks, sink_end = ctx.Pipe()
        sink = ctx.Process(target=sink_main, args=(sink_end,), daemon=True)
        sink.start()
        processes.append(sink)
        smarthost_port = sinks.recv()["mailveil"]
        settings = load_settings(
            env={}, data_dir=work / "var", database_url=database_url, relay_host="127.0.0.1",
            relay_port=_free_port(), api_host="127.0.0.1", api_port=_free_port(),
            relay_allow_plain_auth_on_loopback=True, smarthost_host="127.0.0.1",
            smarthost_port=smarthost_port, smarthost_pool_size=max(1, args.connections),
            log_json=False, log_level="warning",
        )  # fmt: skip
        initialise(settings, console)
        world = seed(settings, args.customers)
        token = admin_key(settings)
        server = start_serve(settings, mode, log)
        base = f"http://127.0.0.1:{settings.api_port}"
        try:
            _wait_up(base, "/healthz", time.monotonic() + 120)
            _wait_relay(settings.relay_port, time.monotonic() + 120)
        except SystemExit:
            console.print(log.read_text(errors="replace")[-3000:])
            raise
        load, load_end = ctx.Pipe()
        seconds = args.api_seconds
        clients = ctx.Process(
            target=api_load_main,
            args=(base, token, args.api_clients, seconds, load_end),
            daemon=True,
        )
        clients.start()
        processes.append(clients)
        if load.recv() != "ready":
            raise SystemExit("the API clients did not get ready")

        def jobs(start: int, count: int) -> list[Job]:
            out = []
            for i in range(start, start + count):
                alias, _real = world.targets[i % len(world.targets)]
                out.append(Job(i, "sales@acme-bench.example", alias, message(i, alias)))
            return out

        login = ("acme-bench", world.seller_key)
        n, k = args.messages, args.connections
        relay_phase(settings.relay_port, jobs(0, args.warmup), k, login)
        idle = relay_phase(settings.relay_port, jobs(args.warmup, n), k, login)
        load.send("go")
        time.sleep(min(2.0, seconds / 4))  # the API clients at full speed first
        began = time.monotonic()
        loaded = relay_phase(settings.relay_port, jobs(args.warmup + n, n), k, login)
        relay_seconds = time.monotonic() - began
        if relay_seconds + 2 > seconds:
            console.print(
                f"[yellow]{mode}: the relay's loaded phase ({relay_seconds:.0f} s) outlasted "
                f"the API load ({seconds:.0f} s): raise --api-seconds[/]"
            )
        api_seconds, api_latencies, statuses = load.recv()
        clients.join(timeout=30)
        if len(loaded) != n or len(idle) != n:
            raise SystemExit(f"{mode}: the relay did not acknowledge every message")
        run = Run(
            mode, idle, loaded, relay_seconds, len(api_latencies) / api_seconds,
            api_latencies, dict(statuses), os.getloadavg()[0],
        )  # fmt: skip
        code = stop_serve(server)
        server = None
        if code != 0:
            console.print(log.read_text(errors="replace")[-3000:])
            raise SystemExit(f"{mode}: mailveil serve exited {code} on SIGTERM")
        console.print(run.verdict())
        return run
    finally:
        if server is not None:
            stop_serve(server)
        for proc in reversed(processes):
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def table(backend: str, runs: list[Run], args: argparse.Namespace) -> Table:
    out = Table(
        title=f"{backend}: `mailveil serve` by mode, {args.messages} messages over "
        f"{args.connections} connection(s), {args.api_clients} API clients (times in ms)"
    )
    for column in ("mode", "API", "relay p50", "relay p99", "x idle", "relay msg/s",
                   "API req/s", "API p99", "API statuses"):  # fmt: skip
        left = column in ("mode", "API")
        wrap = column == "API statuses"
        out.add_column(column, justify="left" if left else "right", no_wrap=not wrap)
    for run in runs:
        out.add_row(
            run.mode, "idle", f"{percentile(run.idle, 0.5):.1f}",
            f"{percentile(run.idle, 0.99):.1f}", "", "-", "-", "-", "-",
        )  # fmt: skip
        out.add_row(
            "",
            "loaded",
            f"{percentile(run.loaded, 0.5):.1f}",
            f"{percentile(run.loaded, 0.99):.1f}",
            f"{run.ratio():.2f}",
            f"{len(run.loaded) / run.relay_seconds:,.0f}",
            f"{run.api_rate:,.0f}",
            f"{1000 * percentile(run.api_latencies, 0.99):.0f}" if run.api_latencies else "-",
            " ".join(f"{s}:{c}" for s, c in sorted(run.statuses.items())),
        )
    return out


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """This benchmark's options (``argv``: its command line; relay.py --mixed passes its own)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400, help="relay messages per phase")
    parser.add_argument("--connections", type=int, default=1, help="relay client connections")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--api-clients", type=int, default=32)
    parser.add_argument(
        "--api-seconds", type=float, default=60.0, help="how long the API clients run"
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=PG_URL, help="server for a private database")
    parser.add_argument(
        "--modes",
        default="supervisor,single-process",
        help=f"comma-separated, run in this order: {', '.join(MODES)}",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (the suite's)")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.warmup, args.customers = 30, 5, 20
        args.api_clients, args.api_seconds, args.backends = 8, 6.0, "sqlite"
    known = r"supervisor(-nice\d+)?|single-process"
    unknown = [m for m in _modes(args) if not re.fullmatch(known, m)]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    return args


def _modes(args: argparse.Namespace) -> list[str]:
    return [m.strip() for m in args.modes.split(",") if m.strip()]


def main() -> int:
    args = options()
    modes = _modes(args)
    console = Console(width=max(120, Console().width))
    results: list[tuple[str, list[Run]]] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        console.rule(backend)
        runs = []
        for mode in modes:
            if backend == "postgresql":
                with private_database(args.pg_url) as url:
                    runs.append(bench(args, url, mode, console))
            else:
                runs.append(bench(args, "", mode, console))
        console.print(table(backend, runs, args))
        results.append((backend, runs))
    for backend, runs in results:
        for run in runs:
            console.print(f"{backend}, {run.verdict()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
