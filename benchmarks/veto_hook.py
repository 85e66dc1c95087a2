"""The veto hook's cost on the relay: submission latency p50/p99 with no hook, and with a local
hook answering "allow" after 1 ms and after 40 ms, in one run.

    .venv/bin/python benchmarks/veto_hook.py             # 1,000 messages per variant, 8 connections
    .venv/bin/python benchmarks/veto_hook.py --quick     # what the test suite runs

Set-up (untimed, as ``benchmarks/relay.py``): a temporary data directory (SQLite unless
``--database-url``), customers with a shipped order from one seller and an alias, a sink
process (the smarthost), and one hook process per delay (``ThreadingHTTPServer`` on
loopback, keep-alive, checking nothing: the relay's side is measured). For each variant a
relay process (``RelayServer``, what ``mailveil relay`` runs) is started with that hook and
warmed up; then ``--n`` messages per variant are submitted over ``--concurrency`` connections
with SMTP AUTH as the seller, in ``--rounds`` chunks interleaved across the variants (load
that drifts during the run is shared alike); latency is MAIL to the 250 after DATA (the relay
answers after the hook and the before-queue delivery). Reported beside the no-hook peer of
the same run: p50, p99, the added p50/p99, messages/s, and how many messages were held (a
hook answer later than ``veto_timeout_seconds`` holds the message; none should be).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import relay as bench  # noqa: E402  (benchmarks/relay.py: set-up, sink, relay process, clients)
from mailveil.config import load_settings  # noqa: E402

SECRET = "bench-veto-secret"  # noqa: S105  (a throwaway key for a loopback hook)


def hook_main(delay: float, conn: Connection) -> None:
    """A hook that answers allow after ``delay`` seconds; counts requests."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: without this, Nagle holds the body until
        # the client's delayed ACK (40 ms), which would be charged to the relay.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            body = json.dumps({"decision": "allow"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    conn.send(server.server_address[1])
    server.serve_forever()


def held_count(settings: Any) -> int:
    from sqlalchemy import func, select

    from mailveil.ledger.models import LedgerEntry
    from mailveil.runtime import Runtime

    runtime = Runtime.open(settings)
    try:
        with runtime.session_factory() as session:
            return int(
                session.scalar(select(func.count()).where(LedgerEntry.kind == "message_held")) or 0
            )
    finally:
        runtime.engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="messages per variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=0.5, help="veto_timeout_seconds")
    parser.add_argument("--rounds", type=int, default=10, help="chunks per variant, interleaved")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--quick", action="store_true", help="a small run (the test suite's)")
    args, _unknown = parser.parse_known_args()  # run_all.py passes flags meant for others
    if args.quick:
        args.n, args.concurrency, args.customers, args.warmup, args.rounds = 60, 4, 20, 10, 3
    console = Console(width=max(110, Console().width))
    work = Path(tempfile.mkdtemp(prefix="mailveil-bench-veto-"))
    settings = load_settings(
        env={},
        data_dir=work / "var",
        database_url=args.database_url,
        relay_host="127.0.0.1",
        relay_allow_plain_auth_on_loopback=True,
        smarthost_host="127.0.0.1",
        smarthost_pool_size=max(1, args.concurrency),
        log_json=False,
        log_level="warning",
    ).with_overrides(relay_port=0)
    ctx = mp.get_context("spawn")
    processes: list[Any] = []
    try:
        bench.initialise(settings, console)
        world = bench.seed(settings, args.customers)
        sinks, sink_end = ctx.Pipe()
        sink_proc = ctx.Process(target=bench.sink_main, args=(sink_end,), daemon=True)
        sink_proc.start()
        processes.append(sink_proc)
        ports = sinks.recv()
        hooks: dict[str, str] = {}
        for name, delay in (("1 ms", 0.001), ("40 ms", 0.040)):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=hook_main, args=(delay, theirs), daemon=True)
            proc.start()
            processes.append(proc)
            hooks[name] = f"http://127.0.0.1:{mine.recv()}/veto"

        def jobs(start: int, count: int) -> list[bench.Job]:
            out = []
            for i in range(start, start + count):
                alias, _real = world.targets[i % len(world.targets)]
                out.append(bench.Job(i, bench.SELLER, alias, bench.message(i, alias)))
            return out

        login = ("acme-bench", world.seller_key)
        # All three relays run side by side and the timed messages go in rounds, a chunk to
        # each variant in turn: a machine whose load drifts during the run charges the drift
        # to every variant alike instead of to whichever ran last.
        relays: list[tuple[str, Any, int]] = []
        for name, url in (("no hook", ""), *hooks.items()):
            variant = settings.with_overrides(
                smarthost_port=ports["mailveil"],
                veto_url=url,
                platform_webhook_secret=SECRET,
                veto_timeout_seconds=args.timeout,
            )
            relay, relay_end = ctx.Pipe()
            proc = ctx.Process(target=bench.relay_main, args=(variant, relay_end, False))
            proc.start()
            processes.append(proc)
            relays.append((name, relay, relay.recv()))
        start = 0
        for _name, _relay, port in relays:
            bench.timed_run("mailveil", port, jobs(start, args.warmup), args.concurrency,
                            login, sinks)  # fmt: skip
            start += args.warmup
        before = held_count(settings)
        latencies: dict[str, list[float]] = {name: [] for name, _, _ in relays}
        seconds: dict[str, float] = dict.fromkeys(latencies, 0.0)
        chunk = max(args.concurrency, args.n // args.rounds)
        sent = 0
        while sent < args.n:
            count = min(chunk, args.n - sent)
            for name, _relay, port in relays:
                result = bench.timed_run(
                    "mailveil", port, jobs(start, count), args.concurrency, login, sinks
                )
                latencies[name] += result.submit_ms
                seconds[name] += result.submit_seconds
                start += count
            sent += count
        held = held_count(settings) - before
        for _name, relay, _port in relays:
            relay.send("stop")
            relay.recv()  # the profile text (empty)
        results = [
            (
                name,
                bench.Result(name, len(ms), seconds[name], seconds[name], ms, []),
                held,
            )
            for name, ms in latencies.items()
        ]
        report(console, results, args)
    finally:
        for proc in processes:
            proc.terminate()
            proc.join(timeout=10)
    return 0


def report(
    console: Console, results: list[tuple[str, bench.Result, int]], args: argparse.Namespace
) -> None:
    pct = bench.percentile
    base = results[0][1]
    b50, b99 = pct(base.submit_ms, 0.50), pct(base.submit_ms, 0.99)
    table = Table(
        title=f"veto hook: {args.n} messages per variant, {args.concurrency} connections, "
        f"timeout {args.timeout:g} s"
    )
    for column in ("variant", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms", "msg/s"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for name, result, _held in results:
        p50, p99 = pct(result.submit_ms, 0.50), pct(result.submit_ms, 0.99)
        table.add_row(
            name,
            f"{p50:.1f}",
            f"{p99:.1f}",
            "-" if result is base else f"{p50 - b50:+.1f}",
            "-" if result is base else f"{p99 - b99:+.1f}",
            f"{result.submit_rate:.0f}",
        )
    console.print(table)
    held = results[0][2]
    console.print(f"messages held (a hook answer later than the timeout holds one): {held}")


if __name__ == "__main__":
    raise SystemExit(main())
