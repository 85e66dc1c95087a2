"""The relay killed (SIGKILL) mid-traffic, again and again: nothing accepted is lost, no
relay_messages row stays ``sending`` once reconciled, and the ledger has exactly one
``message`` entry per message however often its sender had to retry.

`mailveil relay` runs in its own process against a SQLite database; four clients send
messages the way an MTA does (the same bytes again after any failure, until a 250). The
smarthost (a sink) takes a little time over each message, so some kills land between its
acceptance and the relay's 250: those messages are delivered twice (README, "Delivery").
"""

from __future__ import annotations

import random
import smtplib
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from process_kit import seed, start, stop
from relay_server_kit import SELLER_ADDRESS, message, parsed
from sqlalchemy import func, select

from mailveil.config import load_settings
from mailveil.demo.harness import free_port
from mailveil.ledger.models import LedgerEntry
from mailveil.relay.models import RelayMessage
from mailveil.runtime import Runtime
from smtp_kit import Received, Sink

CLIENTS = 4
PER_CLIENT = 12
KILLS = 3
AFTER = 2.0  # relay_reconcile_after_seconds: short, so the test need not wait long


def wait_up(port: int, proc: subprocess.Popen[str], log: Path) -> float:
    """Seconds until the relay answers EHLO (a loaded machine starts Python slowly)."""
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()}"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                assert client.ehlo()[0] == 250
                return time.monotonic() - t0
        except OSError:
            assert time.monotonic() - t0 < 300, f"no SMTP on {port}: {log.read_text()}"
            time.sleep(0.2)


def sending_rows(data: Path) -> dict[str, int]:
    runtime = Runtime.open(load_settings(env={}, data_dir=data))
    try:
        with runtime.session_factory() as session:
            rows = session.execute(
                select(RelayMessage.status, func.count()).group_by(RelayMessage.status)
            )
            return {str(s): int(n) for s, n in rows}
    finally:
        runtime.engine.dispose()


def ledger_kinds(data: Path) -> Counter[str]:
    runtime = Runtime.open(load_settings(env={}, data_dir=data))
    try:
        with runtime.session_factory() as session:
            rows = session.execute(
                select(LedgerEntry.kind, func.count()).group_by(LedgerEntry.kind)
            )
            return Counter({str(k): int(n) for k, n in rows})
    finally:
        runtime.engine.dispose()


def test_sigkill_mid_traffic_leaves_no_row_sending_and_one_entry_per_message(
    tmp_path: Path,
) -> None:
    seeded = seed(tmp_path / "var")
    port = free_port()
    env = {
        "MAILVEIL_RELAY_ALLOW_PLAIN_AUTH_ON_LOOPBACK": "true",
        "MAILVEIL_RELAY_RECONCILE_AFTER_SECONDS": str(AFTER),
        "MAILVEIL_RELAY_RECONCILE_INTERVAL_SECONDS": "0.5",
    }

    def slow(_: Received) -> None:
        time.sleep(0.02)  # the smarthost's own work: a kill can land inside it

    acknowledged: set[str] = set()
    lock = threading.Lock()
    stop_clients = threading.Event()

    def client(n: int) -> None:
        for i in range(PER_CLIENT):
            subject = f"[shipping] kill test {n}-{i}"
            data = message(from_=SELLER_ADDRESS, to=seeded.alias, subject=subject)
            while not stop_clients.is_set():  # the same bytes until a 250, as an MTA retries
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:
                        smtp.login("shop", seeded.token)
                        smtp.sendmail(SELLER_ADDRESS, [seeded.alias], data)
                    with lock:
                        acknowledged.add(subject)
                    break
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.2)

    with Sink(port=free_port()) as sink:
        sink.on_message = slow
        env["MAILVEIL_SMARTHOST_PORT"] = str(sink.port)
        starts: list[float] = []
        log = tmp_path / "relay-0.log"
        proc = start(["--data-dir", str(seeded.data), "relay", "--port", str(port)], log, **env)
        starts.append(wait_up(port, proc, log))
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        left_sending: list[int] = []
        rng = random.Random(16)
        try:
            for k in range(KILLS):
                time.sleep(rng.uniform(0.8, 1.6))  # traffic flowing
                proc.kill()  # SIGKILL: no handler runs, nothing is flushed
                proc.wait(timeout=20)
                left_sending.append(sending_rows(seeded.data).get("sending", 0))
                time.sleep(AFTER + 0.2)  # the killed relay's rows are past the threshold
                log = tmp_path / f"relay-{k + 1}.log"
                proc = start(
                    ["--data-dir", str(seeded.data), "relay", "--port", str(port)], log, **env
                )
                starts.append(wait_up(port, proc, log))
            deadline = time.monotonic() + 180
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            assert not any(t.is_alive() for t in threads), "clients did not finish"
            time.sleep(AFTER + 1.0)  # the periodic reconcile: rows whose 250 was the last word
        finally:
            stop_clients.set()
            code = stop(proc)
        assert code == 0, log.read_text()
        delivered = Counter(str(parsed(m.data)["Subject"]) for m in sink.messages)

    statuses = sending_rows(seeded.data)
    kinds = ledger_kinds(seeded.data)
    messages = CLIENTS * PER_CLIENT
    duplicates = sum(n - 1 for n in delivered.values())
    print(
        f"\nkills {KILLS}, messages {messages}, rows left sending after each kill {left_sending},"
        f" after reconcile {statuses.get('sending', 0)}; rows by status {statuses};"
        f" ledger {dict(kinds)}; duplicates delivered {duplicates};"
        f" relay start times {[round(x, 1) for x in starts]} s"
    )
    assert len(acknowledged) == messages
    # Nothing acknowledged was lost.
    assert set(delivered) >= acknowledged
    # No row stays "sending"; a message whose outcome was never recorded says "unknown".
    assert statuses.get("sending", 0) == 0
    assert sum(statuses.values()) == messages  # one row per message, retries included
    assert kinds["message"] == messages
    # Each message's last word: delivered (with its message_delivered entry), or unknown
    # (killed before its outcome was written: its message_unknown entry says so).
    assert statuses.get("delivered", 0) + statuses.get("unknown", 0) == messages
    assert kinds["message_delivered"] == statuses.get("delivered", 0)
    assert kinds["message_unknown"] >= statuses.get("unknown", 0)
