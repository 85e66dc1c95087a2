"""The relay benchmark's world, sinks and clients (benchmarks/relay.py and its scale-out and
memory runs): set-up of customers, aliases and the seller, the 2 KB message, the sink process,
and the SMTP clients that submit and time messages."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiosmtplib
from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, select

from mailveil.config import Settings

HERE = Path(__file__).resolve().parent
HARNESS = HERE.parent / "tests" / "relay"  # postfix_harness.py: the Postfix and sink helpers
SELLER = "sales@acme-bench.example"
TOKEN = re.compile(rb"bench-(\d+)")
MESSAGE_BYTES = 2048


# ------------------------------------------------------------------------------- set-up


@dataclass(frozen=True)
class World:
    seller_key: str
    targets: list[tuple[str, str]]  # (alias, real address) per customer


def initialise(settings: Settings, console: Console) -> None:
    cli = Path(sys.executable).with_name("mailveil")
    command = [str(cli), "--data-dir", str(settings.data_dir)]
    if settings.database_url:
        command += ["--database-url", settings.database_url]
    subprocess.run([*command, "init"], check=True, capture_output=True)
    from mailveil.relay.dkim import init_dkim_keys
    from mailveil.relay.messages import init_verp_key

    init_dkim_keys(settings)  # `mailveil init` may not make the relay's keys (yet)
    init_verp_key(settings)
    console.print(f"data directory {settings.data_dir} ({settings.db_url.split(':')[0]})")


def seed(settings: Settings, customers: int) -> World:
    from mailveil.auth.keys import Role, issue_key
    from mailveil.contacts.customers import import_customers
    from mailveil.contacts.disclosures import DisclosureRequest, disclose_bulk
    from mailveil.contacts.models import Customer, Order
    from mailveil.contacts.principals import create_principal
    from mailveil.db.base import utcnow
    from mailveil.runtime import Runtime

    runtime = Runtime.open(settings)
    with runtime.session_factory() as session:

        def records() -> Iterator[tuple[int, dict[str, Any]]]:
            for i in range(customers):
                address = f"buyer.{i}@home-bench.example"
                yield i + 1, {"external_id": f"c{i}", "email": address, "country": "DE"}

        outcomes = list(import_customers(session, runtime.vault, records(), batch_size=5000))
        assert all(o.status == "created" for o in outcomes), "customer import failed"
        seller = create_principal(
            session,
            kind="seller",
            external_id="acme-bench",
            display_name="Acme Bench",
            attributes={"sending_addresses": [SELLER]},
        )
        ids = list(session.scalars(select(Customer.id).order_by(Customer.id)))
        placed = utcnow() - timedelta(days=2)
        session.execute(
            insert(Order),
            [
                {
                    "external_id": f"o{cid}",
                    "customer_id": cid,
                    "seller_id": seller.id,
                    "status": "shipped",
                    "placed_at": placed,
                    "updated_at": placed,
                }
                for cid in ids
            ],
        )
        session.commit()
        results = list(
            disclose_bulk(
                session,
                settings=settings,
                policy=runtime.policy,
                ledger=runtime.ledger,
                requests=(DisclosureRequest(cid, seller.id, "order", f"o{cid}") for cid in ids),
                actor="benchmark",
            )
        )
        assert all(r.allowed and r.alias for r in results), "disclosure denied"
        real = {cid: f"buyer.{cid - 1}@home-bench.example" for cid in ids}
        targets = [(str(r.alias), real[int(r.customer_id or 0)]) for r in results]
        key = issue_key(session, Role.SELLER, principal_id=seller.id, label="bench").token
        session.commit()
    runtime.engine.dispose()
    return World(seller_key=key, targets=targets)


def message(i: int, alias: str) -> bytes:
    """A 2 KB plain-text message to ``alias`` that names the seller's real address twice."""
    head = (
        f"From: Acme Bench <{SELLER}>\r\nTo: {alias}\r\n"
        f"Subject: [shipping] Your parcel bench-{i}\r\n"
        "Date: Tue, 01 Oct 2024 10:00:00 +0200\r\n"
        f"Message-ID: <bench-{i}@acme-bench.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    line = "Your parcel left our warehouse today and should arrive within two days.\r\n"
    body = f"Hello,\r\n\r\nQuestions? Write to {SELLER}.\r\n\r\n"
    tail = f"\r\nKind regards,\r\nAcme Bench ({SELLER})\r\n"
    while len(head) + len(body) + len(line) + len(tail) <= MESSAGE_BYTES:
        body += line
    data = (head + body + tail).encode()
    return data + b" " * (MESSAGE_BYTES - len(data)) if len(data) < MESSAGE_BYTES else data


# ------------------------------------------------------------------------- other processes
def sink_main(conn: Connection) -> None:
    """Two sinks (one per path) in a process of their own, answering commands."""
    sys.path[:0] = [str(HARNESS), str(HARNESS.parent)]  # tests/relay, tests (smtp_kit)
    from smtp_kit import Sink  # type: ignore[import-not-found,unused-ignore]

    sinks = {"mailveil": Sink().start(), "postfix": Sink().start()}
    conn.send({name: sink.port for name, sink in sinks.items()})
    while True:
        command, name = conn.recv()
        if command == "stop":
            break
        sink = sinks[name]
        if command == "count":
            conn.send(len(sink.messages))
        elif command == "clear":
            sink.clear()
            conn.send(True)
        elif command == "arrivals":
            out = []
            for item in sink.messages:
                found = TOKEN.search(item.data)
                out.append((int(found.group(1)) if found else -1, item.at))
            conn.send(out)
        elif command == "leaks":
            needle = SELLER.encode()
            conn.send(sum(needle in item.data.lower() for item in sink.messages))
        elif command == "sample":
            conn.send(sink.messages[-1].data if sink.messages else b"")
    for sink in sinks.values():
        sink.stop()
    conn.send(True)


# ------------------------------------------------------------------------------ clients


@dataclass(frozen=True)
class Job:
    id: int
    mail_from: str
    rcpt: str
    data: bytes


Endpoints = int | Sequence[tuple[str, int]]  # a loopback port, or (address, port) each


async def _worker(
    endpoint: tuple[str, int], jobs: list[Job], login: tuple[str, str] | None
) -> list[tuple[int, float, float]]:
    smtp = aiosmtplib.SMTP(
        hostname=endpoint[0], port=endpoint[1], timeout=60, local_hostname="bench.client.example",
        start_tls=False, use_tls=False,
    )  # fmt: skip
    await smtp.connect()
    if login is not None:
        await smtp.login(*login)
    out = []
    for job in jobs:
        start = time.perf_counter()
        await smtp.sendmail(job.mail_from, [job.rcpt], job.data)
        out.append((job.id, start, time.perf_counter()))
    await smtp.quit()
    return out


def submit(
    to: Endpoints, jobs: list[Job], concurrency: int, login: tuple[str, str] | None
) -> list[tuple[int, float, float]]:
    """Send every job over ``concurrency`` connections, spread over the endpoints in turn (as
    a load balancer in front of several hosts would); (id, start, acknowledged) each."""
    chunks = [jobs[i::concurrency] for i in range(concurrency)]
    ends = [("127.0.0.1", to)] if isinstance(to, int) else list(to)

    async def run() -> list[tuple[int, float, float]]:
        results = await asyncio.gather(
            *(_worker(ends[i % len(ends)], c, login) for i, c in enumerate(chunks) if c)
        )
        return [item for chunk in results for item in chunk]

    return asyncio.run(run())


def wait_delivered(sinks: Connection, name: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        sinks.send(("count", name))
        if sinks.recv() >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: not all {count} messages reached the sink")
        time.sleep(0.02)


@dataclass
class Result:
    name: str
    n: int
    seconds: float  # first submission to last arrival in the sink
    submit_seconds: float  # first submission to last acknowledgement
    submit_ms: list[float]
    e2e_ms: list[float]
    round_trips: float | None = None
    detail: str = ""
    arrived: list[int] = field(default_factory=list)  # the token of each message in the sink
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per message, by process

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def submit_rate(self) -> float:
        return self.n / self.submit_seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed_run(
    name: str,
    port: Endpoints,
    jobs: list[Job],
    concurrency: int,
    login: tuple[str, str] | None,
    sinks: Connection,
    cpu: dict[str, Callable[[], float]] | None = None,
) -> Result:
    """``cpu``: name -> a reading of CPU seconds (``_cpu.py``), read before and after, so the
    result says each process's CPU milliseconds per message."""
    sinks.send(("clear", name))
    sinks.recv()
    before = {k: read() for k, read in (cpu or {}).items()}
    acks = submit(port, jobs, concurrency, login)
    wait_delivered(sinks, name, len(jobs))
    cpu_ms = {k: (read() - before[k]) * 1000 / len(jobs) for k, read in (cpu or {}).items()}
    sinks.send(("arrivals", name))
    arrived = sinks.recv()
    arrivals = dict(arrived)
    first = min(start for _, start, _ in acks)
    last_ack = max(done for _, _, done in acks)
    last_arrival = max(arrivals.values())
    return Result(
        name=name,
        n=len(jobs),
        seconds=last_arrival - first,
        submit_seconds=last_ack - first,
        submit_ms=[(done - start) * 1000 for _, start, done in acks],
        e2e_ms=[(arrivals[i] - start) * 1000 for i, start, _ in acks if i in arrivals],
        arrived=[token for token, _ in arrived],
        cpu_ms=cpu_ms,
    )


def print_cpu(console: Console, mv: Result, pf: Result) -> None:
    """Each path's CPU per message by process: the client and the sink are the same code on
    both paths, so the difference is the server's; with two cores the sum bounds the rate."""
    table = Table(title="CPU per message (ms), by process, 8-connection run")
    for column in ("", "client", "server", "sink", "total", "rate bound on all CPUs"):
        table.add_column(column, justify="right" if column else "left")
    for r in (mv, pf):
        total = sum(r.cpu_ms.values())
        bound = (os.cpu_count() or 1) * 1000 / total if total else float("nan")
        cells = [f"{r.cpu_ms.get(k, 0.0):.2f}" for k in ("client", "server", "sink")]
        table.add_row(r.name, *cells, f"{total:.2f}", f"{bound:,.0f} msg/s")
    console.print(table)
