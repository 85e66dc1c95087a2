"""The abuse mailbox under load: reports per second taken with 1, 4 and 16 parallel SMTP
reporters, on SQLite and PostgreSQL, none refused, beside a plain aiosmtpd sink that only
stores what it receives (the same messages, the same clients, in the same run).

    .venv/bin/python benchmarks/abuse_intake_load.py                 # 300 reports a level
    .venv/bin/python benchmarks/abuse_intake_load.py --reports 1000 --parallel 1,4,16,64
    .venv/bin/python benchmarks/abuse_intake_load.py --quick         # CI: 24 a level

After a spam run the whole customer base may report at once. Set-up (untimed): a data
directory with the keys ``mailveil init`` makes, the schema (a SQLite file, or a private
schema on PostgreSQL at ``--pg-url``), ``--customers`` customers whose mail domain publishes
SPF for 127.0.0.1 and DMARC (so every report is verified, as a real customer's is), a seller
and an alias each. The relay (``RelayThread``, what ``mailveil relay`` runs, with a static
resolver for that zone) and the sink each run in a process of their own.

Timed: ``P`` client threads (smtplib, one transaction per report) send the reports of
different customers, each an ARF-less forward of spam to the customer's real address, as a
spam wave produces (each report is parsed, verified, stored, ledgered and ranked). A report
counts as taken when the relay answered 250 (a receipt, ``R-n``; or ``Q-...`` when it was
queued in the spool for a busy database, stored afterwards); anything else is refused.
After each level the database is checked: every taken report is stored (the spool drained).

Printed: per backend and level, reports/s through mailveil, refused and queued counts, rows
stored, p50/p99 latency, and the sink's messages/s for the same clients and messages.
"""

from __future__ import annotations

import argparse
import email.policy
import multiprocessing as mp
import smtplib
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select, text

from mailveil.config import Settings, load_settings
from mailveil.contacts.customers import import_customers
from mailveil.contacts.principals import create_principal
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.detect.models import AbuseReport
from mailveil.ledger.signing import init_signing_key
from mailveil.relay.dkim import init_dkim_keys
from mailveil.relay.messages import init_verp_key
from mailveil.vault import init_keys

HERE = Path(__file__).resolve().parent
HARNESS = HERE.parent / "tests" / "relay"  # beside tests/smtp_kit.py: the aiosmtpd sink
DOMAIN = "reporters.example"
RELAY_DOMAIN = "relay.bench.example"
ABUSE = f"report-abuse@{RELAY_DOMAIN}"
RECORDS = {
    (DOMAIN, "TXT"): ["v=spf1 ip4:127.0.0.0/8 -all"],
    (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=reject"],
}
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def customer(n: int) -> str:
    return f"buyer{n}@{DOMAIN}"


def report(n: int) -> bytes:
    spam = EmailMessage()
    spam["From"] = "Catalogue King <king@spam-wave.example>"
    spam["To"] = customer(n)
    spam["Subject"] = "Cheap catalogues"
    spam["Date"] = "Tue, 07 Jan 2025 10:14:57 +0000"
    spam["Message-ID"] = f"<wave-{n}@spam-wave.example>"
    spam["Received"] = "from mx.spam-wave.example ([203.0.113.9]) by mx.reporters.example"
    spam.set_content("Our new catalogue is out. Order today and save 70 %!\n" * 20)
    wrapper = EmailMessage()
    wrapper["From"] = customer(n)
    wrapper["To"] = ABUSE
    wrapper["Subject"] = "Fwd: Cheap catalogues"
    wrapper["Message-ID"] = f"<report-{n}-{uuid.uuid4().hex[:8]}@reporters.example>"
    wrapper.set_content("I never gave them my address.\n")
    wrapper.add_attachment(spam)
    return wrapper.as_bytes(policy=email.policy.SMTP)


# ------------------------------------------------------------------------------ set-up


def prepare(root: Path, database_url: str, customers: int) -> Settings:
    settings = load_settings(
        env={},
        data_dir=root / "var",
        database_url=database_url,
        relay_domain=RELAY_DOMAIN,
        relay_port=0,
        relay_max_connections=256,
    )
    for init in (init_keys, init_signing_key, init_dkim_keys, init_verp_key):
        init(settings)
    engine = make_engine(settings)
    upgrade(engine)
    from mailveil.vault import Vault

    vault = Vault.open(settings)
    with make_session_factory(engine)() as session:
        rows = [
            (n + 1, {"external_id": f"c-{n}", "email": customer(n), "country": "DE"})
            for n in range(customers)
        ]
        import_customers(session, vault, rows, commit=False)
        create_principal(session, kind="seller", external_id="s-1", display_name="Shop")
        session.commit()
    engine.dispose()
    return settings


def pg_schema(url: str) -> tuple[str, str] | None:
    """A private schema on PostgreSQL, and the URL that uses it (None: unreachable)."""
    name = f"bench_abuse_{uuid.uuid4().hex[:8]}"
    try:
        engine = make_engine(url=url)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        engine.dispose()
    except Exception as exc:
        print(f"PostgreSQL at {url} unusable ({type(exc).__name__}): skipped")
        return None
    sep = "&" if "?" in url else "?"
    return name, f"{url}{sep}options=-csearch_path%3D{name}"


def drop_schema(url: str, name: str) -> None:
    engine = make_engine(url=url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    engine.dispose()


# ---------------------------------------------------------------------- server processes


def relay_main(conn: Connection, settings: Settings) -> None:
    from mailveil.relay.context import RelayContext
    from mailveil.relay.sender_auth import StaticResolver
    from mailveil.relay.server import RelayThread
    from mailveil.runtime import Runtime

    runtime = Runtime.open(settings)
    server = RelayThread(RelayContext.load(runtime, resolver=StaticResolver(RECORDS)))
    server.start()
    conn.send(server.port)
    conn.recv()
    server.stop()
    runtime.engine.dispose()


def sink_main(conn: Connection) -> None:
    sys.path[:0] = [str(HARNESS), str(HARNESS.parent)]  # tests/relay, tests (smtp_kit)
    from smtp_kit import Sink  # type: ignore[import-not-found,unused-ignore]

    sink = Sink().start()
    conn.send(sink.port)
    while conn.recv() == "count":
        conn.send(len(sink.messages))
    sink.stop()


def start(target: Any, *args: Any) -> tuple[mp.Process, Connection, int]:
    ours, theirs = mp.Pipe()
    process = mp.get_context("spawn").Process(target=target, args=(theirs, *args), daemon=True)
    process.start()
    port = int(ours.recv())
    return process, ours, port


def stop(process: mp.Process, conn: Connection) -> None:
    conn.send("stop")
    process.join(timeout=30)


# ---------------------------------------------------------------------------- the load


def send(port: int, items: list[tuple[str, bytes]], rcpt: str) -> list[tuple[int, str, float]]:
    """One client: each report in its own transaction on one connection."""
    out = []
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.reporters.example", timeout=300) as c:
        c.ehlo()
        for sender, data in items:
            t0 = time.perf_counter()
            try:
                c.mail(sender)
                c.rcpt(rcpt)
                code, reply = c.data(data)
            except smtplib.SMTPResponseException as exc:
                code, reply = exc.smtp_code, exc.smtp_error
            out.append((code, reply.decode("utf-8", "replace"), time.perf_counter() - t0))
    return out


def load(port: int, reports: int, parallel: int, rcpt: str, first: int) -> dict[str, Any]:
    batches: list[list[tuple[str, bytes]]] = [[] for _ in range(parallel)]
    for i in range(reports):
        n = first + i
        batches[i % parallel].append((customer(n), report(n)))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = [r for batch in pool.map(lambda b: send(port, b, rcpt), batches) for r in batch]
    wall = time.perf_counter() - t0
    taken = [r for r in results if r[0] == 250]
    latencies = sorted(r[2] for r in results)
    return {
        "wall": wall,
        "rate": len(taken) / wall,
        "taken": len(taken),
        "queued": sum("reference Q-" in r[1] for r in taken),
        "refused": len(results) - len(taken),
        "refusals": sorted({f"{r[0]} {r[1][:40]}" for r in results if r[0] != 250})[:3],
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def stored(settings: Settings, expect: int, wait: float = 60.0) -> int:
    """Reports in the database once the spool has drained (up to ``wait`` seconds)."""
    engine = make_engine(settings)
    deadline = time.monotonic() + wait
    try:
        while True:
            with engine.connect() as conn:
                count = int(
                    conn.execute(select(func.count()).select_from(AbuseReport)).scalar_one()
                )
            if count >= expect or time.monotonic() > deadline:
                return count
            time.sleep(0.2)
    finally:
        engine.dispose()


def run_backend(
    console: Console, name: str, url: str, levels: list[int], reports: int, sink_port: int,
    sink: Connection,
) -> list[list[str]]:  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="mailveil-abuse-load-") as tmp:
        settings = prepare(Path(tmp), url, customers=reports * len(levels) + 10)
        process, conn, port = start(relay_main, settings)
        try:
            first, total = 0, 0
            load(port, 4, 1, ABUSE, 10_000_000)  # warm-up (parsers, keys, connections)
            total += 4
            for parallel in levels:
                mine = load(port, reports, parallel, ABUSE, first)
                total += reports
                in_db = stored(settings, total)
                sink.send("count")
                before = int(sink.recv())
                peer = load(sink_port, reports, parallel, "sink@peer.example", first)
                sink.send("count")
                kept = int(sink.recv()) - before
                first += reports
                console.print(
                    f"  {name} x{parallel}: {mine['rate']:.1f} reports/s, "
                    f"{mine['refused']} refused, {mine['queued']} queued; sink {peer['rate']:.0f}/s"
                )
                rows.append(
                    [
                        name,
                        str(parallel),
                        f"{mine['rate']:.1f}",
                        str(mine["refused"]) + (f" {mine['refusals']}" if mine["refused"] else ""),
                        str(mine["queued"]),
                        f"{in_db - (total - reports)}/{reports}",
                        f"{1000 * mine['p50']:.0f} / {1000 * mine['p99']:.0f}",
                        f"{peer['rate']:.0f}",
                        f"{kept}/{reports}",
                    ]
                )
        finally:
            stop(process, conn)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=300, help="reports per level")
    parser.add_argument("--parallel", default="1,4,16", help="parallel reporters per level")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="24 reports a level (CI)")
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    if args.quick:
        args.reports = 24
    levels = [int(x) for x in args.parallel.split(",") if x.strip()]
    console = Console(width=140)  # the table whole, in a log as on a terminal
    console.print(f"abuse mailbox: {args.reports} reports per level, parallel reporters {levels}")
    sink_process, sink, sink_port = start(sink_main)
    rows: list[list[str]] = []
    failed = False
    try:
        rows += run_backend(console, "sqlite", "", levels, args.reports, sink_port, sink)
        schema = None if args.no_postgres else pg_schema(args.pg_url)
        if schema is not None:
            try:
                rows += run_backend(
                    console, "postgresql", schema[1], levels, args.reports, sink_port, sink
                )
            finally:
                drop_schema(args.pg_url, schema[0])
    finally:
        stop(sink_process, sink)
    table = Table(title="Abuse reports taken under load (mailveil beside a plain aiosmtpd sink)")
    for col in (
        "database",
        "parallel",
        "reports/s",
        "refused",
        "queued",
        "stored",
        "p50 / p99 ms",
        "sink msgs/s",
        "sink stored",
    ):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
        failed = failed or row[3] != "0" or row[5].split("/")[0] != row[5].split("/")[1]
    console.print(table)
    console.print(
        f"  target: no report refused, every taken report stored: {'FAIL' if failed else 'PASS'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
