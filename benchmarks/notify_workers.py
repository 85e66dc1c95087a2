"""Delivery rate of one cleared send split across 1, 2 and 4 `mailveil worker` processes
(issue 17: one stage across many workers), beside plain SMTP submission of the same messages
to the same relay, in one run, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/notify_workers.py                  # 2,000 recipients, both DBs
    .venv/bin/python benchmarks/notify_workers.py --hosts 2        # half the workers in a netns
    .venv/bin/python benchmarks/notify_workers.py --db postgresql  # one database
    .venv/bin/python benchmarks/notify_workers.py --quick          # CI: tiny, both DBs

Set-up (untimed), per database: PostgreSQL (a private schema of the tests' database) or one
SQLite file (the workers take turns writing to it: not expected to scale), the relay
(in-process ``RelayThread``) and an aiosmtpd sink as the notify tests start them
(notify_kit.open_env); ``--n`` customers with vault-sealed addresses, each with a registry
gift; one send of the registry-gift template to all of them per worker count (stages
0.1 % -> 1 % -> 10 % -> 100 %, no soak). For each count, that many `mailveil worker`
processes (``--threads`` Dramatiq threads each, no scheduler) are started on the broker and
waited for.

Timed: from queueing the send (what `POST /v1/sends/{id}/start` does with a broker) until
the sink holds every message and the send is completed: the coordinator's gates and stages,
every worker claiming batches (``notify.claims``), re-assessment, disclosure, SMTP to the
relay, the relay's policy, signing, ledger and delivery. Each recipient is counted at the
sink: a second copy or a missing one fails the run.

Peer, same run, same relay, same sink: the same rendered messages to the same aliases,
submitted over one SMTP connection logged in as the same service, over as many connections
as a worker uses (``notify_relay_connections``) and as the largest worker count (threads in
this process).

``--hosts 2``: every second worker runs in a network namespace (``ip netns``, needs root) that
reaches the database, the broker and the relay over a veth link. Those listen on loopback
only, so socat forwards each port at both ends of the link (the relay must see loopback to
allow plain AUTH without TLS); the forwarders add a hop each way. On SQLite the namespace
reaches the file directly (it shares the file system) and only the broker and relay ports.

The last table puts both databases side by side: msg/s per worker count and hosts, plain
submission over 1 and N connections, the 1-worker ratio and its verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rich.console import Console
from rich.table import Table
from sqlalchemy import select, text

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "notify"), str(HERE.parent / "tests")]
from worker_kit import environment, remove_queues  # type: ignore[import-not-found]  # noqa: E402

from _netns import Host, Link, available, second_host  # noqa: E402
from dbkit import PG_URL, private_pg_engine  # type: ignore[import-not-found]  # noqa: E402
from mailveil.auth.keys import Role, issue_key, revoke_key  # noqa: E402
from mailveil.config import Settings, load_settings  # noqa: E402
from mailveil.db.migrate import upgrade  # noqa: E402
from mailveil.db.session import make_engine, make_session_factory  # noqa: E402
from mailveil.notify import sends  # noqa: E402
from mailveil.notify.models import Recipient  # noqa: E402
from mailveil.notify.queue import Dispatcher  # noqa: E402
from mailveil.notify.templates import register_template  # noqa: E402
from notify_glitch import (  # noqa: E402
    DB_NAMES,
    Cell,
    add_db_option,
    databases,
    everyone,
    kit,
    load_customers,
    load_facts,
    peer_messages,
    side_by_side,
    verdict,
)

CREATOR, APPROVER = "apikey:bench-creator", "apikey:bench-approver"
BROKERS = {"redis": "redis://127.0.0.1:6379/12", "amqp": "amqp://guest:guest@127.0.0.1:5672/"}
READY = " threads, scheduler off)"  # `mailveil worker` says so as it starts
# Its own names: other benchmarks (relay.py --scale-out) make namespaces of their own.
ONCE = "every recipient delivered exactly once (counted at the sink), every run"
TARGET = "{workers} worker >= 1.0 x plain submission, 1 connection (issue 17)"
FAIR = "{workers} worker >= 1.0 x plain submission over as many connections ({connections})"
LINK = Link("mvbench2", "mvbench0", "mvbench1", "10.231.7.1", "10.231.7.2")


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[tuple[Any, str]]:
    if kind == "sqlite":
        engine = make_engine(url=f"sqlite:///{work / 'notify.db'}")
        try:
            yield engine, str(engine.url)
        finally:
            engine.dispose()
        return
    with private_pg_engine("mv_bench_workers") as engine:
        with engine.connect() as conn:
            schema = conn.execute(text("SHOW search_path")).scalar_one()
        yield engine, f"{PG_URL}?options=-csearch_path%3D{schema}"


def spawn(settings: Settings, log: Path, threads: int, netns: str | None) -> Any:
    cmd = [sys.executable, "-m", "mailveil", "worker", "--threads", str(threads), "--no-scheduler"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    env = {**environment(settings), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(procs: list[Any]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_until(what: str, predicate: Any, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise TimeoutError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.01)


def new_send(env: Any, template: Any, n: int) -> tuple[int, int]:
    with env.session_factory() as s:
        send = sends.create_send(
            s,
            env.settings,
            env.runtime.ledger,
            template=template,
            entries=everyone(n),
            actor=CREATOR,
            commit=True,
        )
        s.commit()
        if send.status == "awaiting_approval":
            sends.approve(s, env.runtime.ledger, send.id, actor=APPROVER)
            s.commit()
        return send.id, send.eligible


def deliver(
    env: Any, template: Any, n: int, workers: int, args: Any, log: Path, netns: str | None
) -> dict[str, Any]:
    send_id, eligible = new_send(env, template, n)
    before = len(env.sink.recipients())
    marker = log.read_text(errors="replace").count(READY) if log.exists() else 0
    procs = [
        spawn(env.settings, log, args.threads, netns if i % 2 else None) for i in range(workers)
    ]
    try:
        wait_until(
            "the workers to start",
            lambda: log.read_text(errors="replace").count(READY) >= marker + workers,
            180,
            log,
        )
        time.sleep(1.0)  # the line comes just before the broker's consumers start
        dispatcher = Dispatcher(env.runtime)
        t0 = time.perf_counter()
        try:
            dispatcher.start(send_id)
        finally:
            dispatcher._actor.broker.close()

        def done() -> bool:
            env.flush()
            if len(env.sink.recipients()) < before + eligible:
                return False
            with env.session_factory() as s:
                return sends.get_send(s, send_id).status == "completed"

        wait_until(f"send {send_id} with {workers} worker(s)", done, 900, log)
        seconds = time.perf_counter() - t0
    finally:
        stop(procs)
    env.flush()
    got = env.sink.recipients()[before:]
    with env.session_factory() as s:
        owners = s.scalars(
            select(Recipient.claimed_by).where(
                Recipient.send_id == send_id, Recipient.state == "delivered"
            )
        ).all()
        counts = sends.counts_of(s, send_id)
    # The coordinator's chain is named where the send was queued (this process); helpers
    # are named by the worker process running them.
    chain = f":{os.getpid()}:"
    per_process: dict[str, int] = {}
    coordinator = 0
    for owner in owners:
        if owner and chain in owner:
            coordinator += 1
            continue
        proc = (owner or "?").rsplit(":", 1)[0]
        per_process[proc] = per_process.get(proc, 0) + 1
    return {
        "send": send_id,
        "eligible": eligible,
        "seconds": seconds,
        "sink": len(got),
        "unique": len(set(got)),
        "counts": counts,
        "shares": sorted(per_process.values(), reverse=True),
        "coordinator": coordinator,
    }


def submit(env: Any, messages: list[tuple[str, bytes]], connections: int) -> tuple[float, int]:
    settings = env.runtime.settings
    with env.session_factory() as s:
        key = issue_key(s, Role.SERVICE, principal_id=env.service.id, label="bench peer")
        s.commit()
    mail_from = f"notifications@{settings.relay_domain}"
    before = len(env.sink.recipients())

    def one(part: list[tuple[str, bytes]]) -> int:
        client = smtplib.SMTP("127.0.0.1", settings.notify_relay_port)
        client.ehlo()
        client.login("notify", key.token)
        refused = 0
        for alias, data in part:
            try:
                client.sendmail(mail_from, [alias], data)
            except smtplib.SMTPException:
                refused += 1
        client.quit()
        return refused

    t0 = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        refused = sum(pool.map(one, [messages[i::connections] for i in range(connections)]))
    sent = len(messages) - refused

    def arrived() -> bool:
        env.flush()
        return len(env.sink.recipients()) >= before + sent

    wait_until("the peer's messages at the sink", arrived, 600, Path("/nonexistent"))
    seconds = time.perf_counter() - t0
    with env.session_factory() as s:
        revoke_key(s, key.key.key_id)
        s.commit()
    return seconds, sent


def open_env(settings: Settings, engine: Any) -> Iterator[Any]:
    return kit.open_env(settings, make_session_factory(engine), 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="recipients per send")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--threads", type=int, default=1, help="Dramatiq threads per worker")
    add_db_option(parser)
    parser.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    parser.add_argument("--hosts", type=int, choices=(1, 2), default=1)
    parser.add_argument("--quick", action="store_true", help="CI: 60 recipients, 1 and 2")
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    if args.quick:
        args.n, args.workers = 60, "1,2"
    counts = [int(c) for c in args.workers.split(",")]
    console = Console(width=max(120, Console().width))
    dbs = databases(args.db, console)
    if not dbs:
        return 1
    if args.hosts == 2 and (why := available()):
        console.print(f"[red]--hosts 2: {why}[/]")
        return 1
    load = Path("/proc/loadavg").read_text().split()[:3]
    console.print(
        f"load average at the start: {' '.join(load)} on {len(_cpus())} cores; "
        f"databases: {', '.join(dbs)}"
    )
    results: dict[str, dict[str, Cell]] = {}
    for kind in dbs:
        work = Path(tempfile.mkdtemp(prefix="mailveil-bench-workers-"))
        try:
            results[kind] = on_database(kind, work, args, counts, console)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    rows = [(label, {db: results[db].get(label, ("-", None)) for db in dbs})
            for label in dict.fromkeys(k for db in dbs for k in results[db])]  # fmt: skip
    console.print(
        side_by_side(
            f"one send of {args.n:,} recipients across worker processes ({args.threads} "
            f"thread(s) each, {args.broker}, {args.hosts} host(s)), beside plain submission",
            dbs,
            rows,
        )
    )
    load_end = Path("/proc/loadavg").read_text().split()[:3]
    console.print(
        f"load average at the end: {' '.join(load_end)} (a loaded 2-core machine: worker "
        "processes, relay, sink, database and broker share its cores)"
    )
    return 0 if all(r[ONCE][1] for r in results.values()) else 1


def on_database(
    kind: str, work: Path, args: Any, counts: list[int], console: Console
) -> dict[str, Cell]:
    log = work / "workers.log"
    settings = load_settings(env={}, data_dir=work / "var", log_json=True, log_level="warning")
    with database(kind, work) as (engine, url):
        upgrade(engine)
        tuned = kit.notify_settings(
            settings.with_overrides(database_url=url),
            notify_broker_url=BROKERS[args.broker],
            worker_queue=f"mv_bench_{uuid.uuid4().hex[:10]}",
            notify_min_stage_size=max(5, args.n // 1000),
            notify_frequency_cap=1000,  # the same customers get one send per run
            smarthost_pool_size=4,
        )
        gen = open_env(tuned, engine)
        env = next(gen)
        try:
            return measure(env, kind, args, counts, console, log)
        finally:
            with contextlib.suppress(StopIteration):
                next(gen)
            remove_queues(env.settings)


class World:
    def __init__(self, env: Any) -> None:
        self.env, self.n, self.db = env, 0, None


def measure(
    env: Any, kind: str, args: Any, counts: list[int], console: Console, log: Path
) -> dict[str, Cell]:
    """One database's runs, printed; returns its figures and verdicts (label -> cell)."""
    n, db = args.n, DB_NAMES[kind]
    t_cust = load_customers(World(env), n, sealed=True)  # type: ignore[arg-type]
    load_facts(World(env), range(1, n + 1))  # type: ignore[arg-type]
    with env.session_factory() as s:
        template = register_template(
            s, env.settings, {**kit.GIFT_TEMPLATE, "expected_volume": n}, actor=CREATOR
        )
        s.commit()
        s.expunge(template)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    console.print(
        f"[bold]{db}[/]: set-up (untimed): {n:,} customers (vault-sealed) in {t_cust:.1f} s, "
        f"each with a registry gift; {args.broker}, {args.threads} thread(s) per worker, "
        f"{args.hosts} host(s); load average {load}"
    )
    if kind == "sqlite":
        console.print(
            "SQLite: one database file, so the workers take turns writing to it: the rate is "
            "not expected to grow with workers (the 1-worker ratio is still measured)"
        )
    netns: contextlib.AbstractContextManager[Host | None] = contextlib.nullcontext(None)
    if args.hosts == 2:
        ports = [
            _port(env.settings.db_url, 5432),
            _port(env.settings.notify_broker_url, 6379),
            env.settings.notify_relay_port,
        ]
        if kind == "sqlite":
            ports = ports[1:]  # the namespace shares the file system, not the network
        netns = second_host(LINK, ports)
    results: list[tuple[int, dict[str, Any]]] = []
    with netns as ns:
        for workers in counts:
            results.append(
                (workers, deliver(env, template, n, workers, args, log, ns and ns.netns))
            )
    messages = peer_messages(env, template, results[-1][1]["send"])
    # A worker sends over notify_relay_connections connections at once: the fair peer uses as
    # many (the issue's target names one connection; both are reported).
    line = env.settings.notify_relay_connections
    peers = [(c, *submit(env, messages, c)) for c in sorted({1, line, max(counts)})]

    table = Table(
        title=f"{db}: one send of {n:,} recipients split across worker processes; relay + "
        "sink in this process"
    )
    for column in ("path", "messages", "seconds", "msg/s", "x plain (1 conn)", "outcome"):
        table.add_column(column, justify="left" if column in ("path", "outcome") else "right")
    base = peers[0][2] / peers[0][1]
    ok = True
    out: dict[str, Cell] = {}
    for workers, r in results:
        rate = r["eligible"] / r["seconds"]
        once = r["sink"] == r["unique"] == r["eligible"]
        ok = ok and once and r["counts"] == {"delivered": r["eligible"]}
        hosts = f"{min(args.hosts, workers)} host(s)"
        table.add_row(
            f"notify: {workers} worker process(es), {hosts}",
            f"{r['eligible']:,}",
            f"{r['seconds']:.1f}",
            f"{rate:,.0f}",
            f"{rate / base:.2f}",
            f"sink {r['sink']} ({r['unique']} distinct); coordinator {r['coordinator']}, "
            f"helpers per process {r['shares']}",
        )
        out[f"msg/s: {workers} worker(s), {hosts}"] = (f"{rate:,.0f} ({rate / base:.2f} x)", None)
    for connections, seconds, sent in peers:
        rate = sent / seconds
        table.add_row(
            f"peer: plain SMTP submission, {connections} connection(s)",
            f"{sent:,}",
            f"{seconds:.1f}",
            f"{rate:,.0f}",
            f"{rate / base:.2f}",
            "same messages",
        )
        out[f"msg/s: plain submission, {connections} connection(s)"] = (f"{rate:,.0f}", None)
    console.print(table)
    one = results[0][1]
    ratio = (one["eligible"] / one["seconds"]) / base
    out[TARGET.format(workers=results[0][0])] = (f"{ratio:.2f} x", ratio >= 1.0)
    same = next(sent / seconds for c, seconds, sent in peers if c == line)
    fair = (one["eligible"] / one["seconds"]) / same
    out[FAIR.format(workers=results[0][0], connections=line)] = (f"{fair:.2f} x", fair >= 1.0)
    out[ONCE] = (", ".join(f"{w}: {r['unique']}/{r['eligible']}" for w, r in results), ok)
    out["scales with workers"] = (
        ("not expected: one file, writers take turns" if kind == "sqlite" else "expected"),
        None,
    )
    checks = Table(title=f"{db}: checks")
    for column in ("check", "measured", "met"):
        checks.add_column(column)
    for label, (measured, met) in out.items():
        if met is not None:
            checks.add_row(label, measured, verdict(met))
    console.print(checks)
    return out


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _port(url: str, default: int) -> int:
    return urlparse(url.replace("postgresql+psycopg", "postgresql")).port or default


if __name__ == "__main__":
    raise SystemExit(main())
