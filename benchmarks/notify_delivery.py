"""Delivery rate of a cleared send (everyone eligible, every gate passing) through the relay
into a sink, beside plain SMTP submission of the same messages to the same relay, in one run.

    .venv/bin/python benchmarks/notify_delivery.py              # 5,000 recipients, both DBs
    .venv/bin/python benchmarks/notify_delivery.py --n 20000
    .venv/bin/python benchmarks/notify_delivery.py --db sqlite  # one database

Set-up (untimed), per database (SQLite under a temp dir; PostgreSQL in a private schema of
the tests' database, dropped at the end): the relay (in-process ``RelayThread``) and an
aiosmtpd sink started as the notify tests start them (notify_kit.open_env); ``--n`` customers
with vault-sealed addresses, each with a registry gift (bulk-loaded, see notify_glitch.py),
the registry-gift template with its expected volume set to the audience (no second approver
needed), stages 0.1 % -> 1 % -> 10 % -> 100 % with no soak.

Timed: ``queue.run_to_end`` of the send, from start until the sink holds every message
(re-assessment, rendering, disclosure, SMTP to the relay, the relay's policy, rewriting,
signing, ledger, delivery; notify's state and ledger commits). Peer, same run, same relay,
same sink: the same rendered messages to the same aliases, submitted by one smtplib
connection logged in as the same service (what the worker does, without notify around it).
benchmarks/relay.py measures the relay alone against Postfix (separate processes, 8
connections); this one keeps notify's single connection on both sides. Target (issue 17's, for one
worker): notify's rate >= 1.0 x plain submission; each database gets its own section, the
last table puts both side by side.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import smtplib
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _cpu import self_cpu_seconds
from mailveil.auth.keys import Role, issue_key, revoke_key
from mailveil.notify import sends
from mailveil.notify.queue import run_to_end
from mailveil.notify.templates import register_template
from notify_glitch import (
    DB_NAMES,
    Cell,
    World,
    add_db_option,
    close_world,
    databases,
    everyone,
    kit,
    load_customers,
    load_facts,
    open_world,
    peer_messages,
    side_by_side,
    verdict,
)

CREATOR, APPROVER = "apikey:bench-creator", "apikey:bench-approver"
COMPLETED = "the cleared send completes, everyone delivered"
RATIO = "notify >= 1.0 x plain submission (one worker)"


class StepFailures(logging.Handler):
    """Counts the worker's failed steps (run_to_end logs each and waits 2 s before the next)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "step failed" in record.getMessage():
            self.count += 1


def wait_sink(env: object, count: int, timeout: float = 600) -> float:
    sink = env.sink  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while len(sink.recipients()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(sink.recipients())} of {count} reached the sink")
        env.flush()  # type: ignore[attr-defined]
        time.sleep(0.01)
    return time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="recipients")
    add_db_option(parser)
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    console = Console(width=max(120, Console().width))
    dbs = databases(args.db, console)
    if not dbs:
        return 1
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    console.print(f"load average at the start: {load}; databases: {', '.join(dbs)}")
    results: dict[str, dict[str, Cell]] = {}
    for name in dbs:
        work = Path(tempfile.mkdtemp(prefix="mailveil-bench-delivery-"))
        world = open_world(work, db=name)
        try:
            results[name] = measure(world, args.n, console)
        finally:
            close_world(world)
            shutil.rmtree(work, ignore_errors=True)
    rows = [(label, {db: results[db][label] for db in dbs}) for label in results[dbs[0]]]
    console.print(side_by_side(f"targets ({args.n:,} recipients, one connection each)", dbs, rows))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    console.print(f"load average at the end: {load}")
    return 0 if all(r[COMPLETED][1] for r in results.values()) else 1


def measure(world: World, n: int, console: Console) -> dict[str, Cell]:
    """One database's run, printed; returns its figures and targets (label -> measured, met)."""
    db = DB_NAMES[world.kind]
    env = world.env
    t_cust = load_customers(world, n, sealed=True)
    load_facts(world, range(1, n + 1))
    with env.session_factory() as s:
        data = {**kit.GIFT_TEMPLATE, "expected_volume": n}
        gift = register_template(s, env.settings, data, actor=CREATOR)
        s.commit()
        send = sends.create_send(
            s, env.settings, env.runtime.ledger, template=gift, entries=everyone(n),
            actor=CREATOR, commit=True,
        )  # fmt: skip
        s.commit()
        if send.status == "awaiting_approval":
            sends.approve(s, env.runtime.ledger, send.id, actor=APPROVER)
            s.commit()
        send_id, eligible = send.id, send.eligible
    console.print(
        f"[bold]{db}[/]: set-up (untimed): {n:,} customers (vault-sealed) in {t_cust:.1f} s, "
        f"each with a registry gift; send {send_id}: {eligible:,} eligible"
    )

    failures = StepFailures()
    logging.getLogger("mailveil.notify").addHandler(failures)
    t0, c0 = time.perf_counter(), self_cpu_seconds()
    try:
        run_to_end(env.runtime, send_id, worker="bench-worker")
        t_end = wait_sink(env, eligible)
    finally:
        logging.getLogger("mailveil.notify").removeHandler(failures)
    notify_s, notify_cpu = t_end - t0, self_cpu_seconds() - c0
    with env.session_factory() as s:
        send = sends.get_send(s, send_id)
        status, counts = send.status, sends.counts_of(s, send_id)
    settings = env.runtime.settings
    messages = peer_messages(env, gift, send_id)
    with env.session_factory() as s:  # a fresh transaction: the relay wrote meanwhile
        key = issue_key(s, Role.SERVICE, principal_id=env.service.id, label="bench peer")
        s.commit()
    before = len(env.sink.recipients())
    mail_from = f"notifications@{settings.relay_domain}"
    t0, c0 = time.perf_counter(), self_cpu_seconds()
    client = smtplib.SMTP(settings.notify_relay_host or "127.0.0.1", settings.notify_relay_port)
    client.ehlo()
    client.login("notify", key.token)
    refused = 0
    for alias, data_bytes in messages:
        try:
            client.sendmail(mail_from, [alias], data_bytes)
        except smtplib.SMTPException:
            refused += 1
    client.quit()
    t_end = wait_sink(env, before + len(messages) - refused)
    raw_s, raw_cpu = t_end - t0, self_cpu_seconds() - c0
    with env.session_factory() as s:
        revoke_key(s, key.key.key_id)
        s.commit()

    delivered = counts.get("delivered", 0)
    table = Table(title=f"{db}: delivery of a cleared send: {n:,} recipients, relay + sink in "
                  "this process, one SMTP connection each")  # fmt: skip
    for column in ("path", "messages", "seconds", "msg/s", "CPU ms/msg", "outcome"):
        table.add_column(column, justify="left" if column in ("path", "outcome") else "right")
    table.add_row("notify: run_to_end (4 stages, gates)", f"{delivered:,}", f"{notify_s:.1f}",
                  f"{delivered / notify_s:,.0f}", f"{1000 * notify_cpu / max(delivered, 1):.2f}",
                  f"{status}; {counts}")  # fmt: skip
    sent = len(messages) - refused
    table.add_row("peer: plain SMTP submission, same messages", f"{sent:,}", f"{raw_s:.1f}",
                  f"{sent / raw_s:,.0f}", f"{1000 * raw_cpu / max(sent, 1):.2f}",
                  f"{refused} refused")  # fmt: skip
    console.print(table)
    ratio = (delivered / notify_s) / (sent / raw_s) if sent and delivered else 0.0
    per_msg = (notify_s / max(delivered, 1) - raw_s / max(sent, 1)) * 1000
    console.print(
        f"{db}: notify's rate is {ratio:.2f} x plain submission; notify adds {per_msg:.1f} ms per "
        "message (re-assessment, disclosure, state and ledger commits). The relay alone "
        "against Postfix: benchmarks/relay.py.\n"
        f"CPU per message of this one process (relay, sink, and the worker or the peer's "
        f"client, sharing one interpreter lock): "
        f"{1000 * (notify_cpu / max(delivered, 1) - raw_cpu / max(sent, 1)):+.2f} ms during "
        "notify against the peer (the worker's own work, less what the relay saves by "
        "committing several connections' messages together). Python runs one thread at a "
        "time here, so notify's overlap with the relay pays only where its CPU fits in the "
        "relay's waits (`mailveil worker` runs in its own process: notify_workers.py).\n"
        f"worker steps that failed and were retried after run_to_end's 2 s pause: "
        f"{failures.count}"
        + (
            " (SQLite 'database is locked' when a transaction that began with reads writes "
            "after the relay committed)"
            if world.kind == "sqlite"
            else ""
        )
    )
    done = status == "completed" and delivered == eligible
    out: dict[str, Cell] = {
        "msg/s: notify (run_to_end) / plain submission (1 conn)": (
            f"{delivered / notify_s:,.0f} / {sent / raw_s:,.0f}",
            None,
        ),
        RATIO: (f"{ratio:.2f} x", ratio >= 1.0),
        COMPLETED: (f"{status}, {delivered:,} of {eligible:,}", done),
        "worker steps failed and retried": (f"{failures.count}", None),
    }
    targets = Table(title=f"{db}: targets")
    for column in ("target", "measured", "met"):
        targets.add_column(column)
    for label, (measured, ok) in out.items():
        if ok is not None:
            targets.add_row(label, measured, verdict(ok))
    console.print(targets)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
