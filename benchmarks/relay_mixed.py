"""The relay's latency while the API is loaded, both in one ``mailveil serve`` process.

Issue 16 (mixed load): "while the API serves its heaviest mix at full speed, the relay's p99
stays within 1.5x of its idle p99". One process runs what ``mailveil serve`` runs -- the API
(uvicorn, its own database pool) and the relay (``serve_beside``) on one event loop -- with an
SMTP sink (its own process) as the relay's smarthost. A client sends ``--messages`` 2 KB
messages over ``--connections`` SMTP connections (AUTH as the seller, every check on, as in
``relay.py``) twice: with the API idle, then while ``--api-clients`` HTTP clients (a process
of their own) hammer the API with ``api_load.py``'s mix (customer reads, disclosures, signed
checkpoints). Printed: the relay's submission p50/p99 in both phases, the API's requests/s
and p99 meanwhile, and the verdict (loaded p99 <= 1.5 x idle p99).

    .venv/bin/python benchmarks/relay_mixed.py                  # SQLite and PostgreSQL
    .venv/bin/python benchmarks/relay_mixed.py --quick          # the suite's: small, SQLite
    .venv/bin/python benchmarks/relay_mixed.py --api-clients 64 --messages 600
    .venv/bin/python benchmarks/relay_mixed.py --split         # API and relay: a process each

The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import shutil
import socket
import tempfile
import time
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


def serve_main(settings: Settings, part: str = "both") -> None:
    """What ``mailveil serve`` runs: the API and the relay on one event loop (``part``
    "both"), or one of them alone ("api", "relay": ``--split``, a process each)."""
    import uvicorn

    from mailveil.api.app import create_app
    from mailveil.api.database import api_runtime
    from mailveil.relay.dns import StaticResolver
    from mailveil.relay.server import RelayServer, serve_beside
    from mailveil.runtime import Runtime

    runtime = Runtime.open(settings)
    api = create_app(api_runtime(runtime), background_checkpoints=True)
    # No DNS: the seller authenticates with SMTP AUTH (as in relay.py).
    relay = RelayServer.from_runtime(runtime, resolver=StaticResolver({}))
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's login_data warning
    config = uvicorn.Config(
        api, host="127.0.0.1", port=settings.api_port, log_level="error", access_log=False,
        log_config=None, backlog=2048,
    )  # fmt: skip
    if part == "relay":
        asyncio.run(relay.serve_forever())
    elif part == "api":
        uvicorn.Server(config).run()
    else:
        asyncio.run(serve_beside(relay, uvicorn.Server(config).serve()))


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


def bench(args: argparse.Namespace, database_url: str, console: Console) -> tuple[bool, str]:
    work = Path(tempfile.mkdtemp(prefix="mailveil-bench-mixed-"))
    ctx = mp.get_context("spawn")
    processes: list[Any] = []
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
        for part in ("api", "relay") if args.split else ("both",):
            server = ctx.Process(target=serve_main, args=(settings, part), daemon=True)
            server.start()
            processes.append(server)
        base = f"http://127.0.0.1:{settings.api_port}"
        _wait_up(base, "/healthz", time.monotonic() + 120)

        _wait_relay(settings.relay_port, time.monotonic() + 120)
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
                f"[yellow]the relay's loaded phase ({relay_seconds:.0f} s) outlasted the API "
                f"load ({seconds:.0f} s): raise --api-seconds[/]"
            )
        api_seconds, api_latencies, statuses = load.recv()
        clients.join(timeout=30)
        load_avg = os.getloadavg()[0]

        where = "its own process beside the API's" if args.split else "`mailveil serve`"
        table = Table(
            title=f"relay in {where}: {n} messages over {k} connection(s), "
            f"{args.api_clients} API clients"
        )
        for column in ("", "relay p50 ms", "relay p99 ms", "relay msg/s", "API req/s",
                       "API p99 ms", "API statuses"):  # fmt: skip
            table.add_column(column, justify="left" if not column else "right")
        table.add_row(
            "API idle", f"{percentile(idle, 0.5):.1f}", f"{percentile(idle, 0.99):.1f}",
            "-", "-", "-", "-",
        )  # fmt: skip
        table.add_row(
            "API loaded",
            f"{percentile(loaded, 0.5):.1f}",
            f"{percentile(loaded, 0.99):.1f}",
            f"{n / relay_seconds:,.0f}",
            f"{len(api_latencies) / api_seconds:,.0f}",
            f"{1000 * percentile(api_latencies, 0.99):.0f}" if api_latencies else "-",
            ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items())),
        )
        console.print(table)
        ratio = percentile(loaded, 0.99) / max(percentile(idle, 0.99), 1e-9)
        met = ratio <= TARGET
        verdict = (
            f"relay p99 under API load {percentile(loaded, 0.99):.1f} ms vs idle "
            f"{percentile(idle, 0.99):.1f} ms = {ratio:.2f} x (target <= {TARGET} x): "
            f"{'met' if met else 'NOT met'}; load average {load_avg:.1f} on {os.cpu_count()} CPUs"
        )
        console.print(verdict)
        if len(loaded) != n or len(idle) != n:
            raise SystemExit("the relay did not acknowledge every message")
        return met, verdict
    finally:
        for proc in reversed(processes):
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
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
        "--split",
        action="store_true",
        help="the API and the relay in a process each (as a supervisor would run them), "
        "instead of one mailveil serve process",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (the suite's)")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.warmup, args.customers = 30, 5, 20
        args.api_clients, args.api_seconds, args.backends = 8, 6.0, "sqlite"
    console = Console(width=max(120, Console().width))
    verdicts = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        console.rule(backend)
        if backend == "postgresql":
            with private_database(args.pg_url) as url:
                verdicts.append((backend, *bench(args, url, console)))
        else:
            verdicts.append((backend, *bench(args, "", console)))
    for backend, _met, text in verdicts:
        console.print(f"{backend}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
