"""`mailveil relay` and `mailveil serve` as real processes: a message through the relay into a
sink smarthost, clean exit on SIGTERM, a clear error when the port is taken, and `mailveil
relay --workers` under the supervisor (a killed worker restarted)."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_kit import (
    LAUNCHER,
    REAL,
    alive,
    child_env,
    events,
    ready_children,
    seed,
    start,
    stop,
    wait_for_smtp,
    wait_until,
)
from relay_server_kit import SELLER_ADDRESS, message, parsed

from mailveil.demo.harness import free_port
from smtp_kit import Sink

pytestmark = pytest.mark.slow  # the relay and the API as real processes


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink(port=free_port()) as running:
        yield running


def test_mailveil_relay_delivers_and_stops_cleanly(tmp_path: Path, sink: Sink) -> None:
    seeded = seed(tmp_path / "var")
    port = free_port()
    log = tmp_path / "relay.log"
    proc = start(
        ["--data-dir", str(seeded.data), "relay", "--port", str(port)],
        log,
        MAILVEIL_SMARTHOST_PORT=str(sink.port),
        MAILVEIL_RELAY_ALLOW_PLAIN_AUTH_ON_LOOPBACK="true",
    )
    try:
        wait_for_smtp(port, proc, log)
        with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
            client.login("shop", seeded.token)
            data = message(from_=SELLER_ADDRESS, to=seeded.alias, subject="[shipping] Hi")
            client.sendmail(SELLER_ADDRESS, [seeded.alias], data)
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()
    [got] = sink.messages
    assert got.rcpt_tos == (REAL,)
    assert parsed(got.data)["From"].addresses[0].addr_spec == seeded.reverse
    output = log.read_text()
    assert "Traceback" not in output
    assert REAL.lower() not in output.lower() and SELLER_ADDRESS not in output


def test_relay_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    seeded = seed(tmp_path / "var")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [*LAUNCHER, "--data-dir", str(seeded.data), "relay", "--port", str(port)],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
        )
    assert run.returncode == 1
    assert f"the relay cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr


def test_serve_runs_the_api_and_the_relay(tmp_path: Path, sink: Sink) -> None:
    seeded = seed(tmp_path / "var")
    api_port, relay_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    proc = start(
        ["--data-dir", str(seeded.data), "serve", "--port", str(api_port)],
        log,
        MAILVEIL_RELAY_PORT=str(relay_port),
        MAILVEIL_SMARTHOST_PORT=str(sink.port),
        PYTHONWARNINGS="default",
    )
    try:
        wait_for_smtp(relay_port, proc, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=5) as r:
            assert r.status == 200
        with smtplib.SMTP("127.0.0.1", relay_port, timeout=15) as client:
            client.ehlo()
            code, _ = client.mail(SELLER_ADDRESS)
            assert code == 250
            code, text = client.rcpt("someone@elsewhere.example")
            assert (code, text) == (
                550,
                b"5.7.1 Relaying denied: recipient is not on the relay domain",
            )
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()


def _holder(server_port: int, client_port: int) -> int:
    """The pid of the process holding the server end of a loopback connection from
    ``client_port`` to ``server_port`` (/proc/net/tcp names its socket, /proc/PID/fd whose)."""
    wanted = f":{server_port:04X}", f":{client_port:04X}"
    inode = ""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(wanted[0]) and fields[2].endswith(wanted[1]):
            inode = fields[9]
    assert inode, f"no server socket for the client port {client_port}"
    target = f"socket:[{inode}]"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if any(os.readlink(fd) == target for fd in fds):
                return int(entry.name)
        except OSError:  # a process that ended, or fds not ours to read
            continue
    raise AssertionError(f"no process holds {target}")


def test_relay_workers_run_under_the_supervisor_which_restarts_a_killed_one(
    tmp_path: Path, sink: Sink
) -> None:
    """`mailveil relay --workers 2` runs "relay" and "relay 2" on one port (connections spread
    evenly over them) under the supervisor `mailveil serve` uses: a worker killed with
    SIGKILL is started again and the relay keeps relaying on its port (before, the command had
    its own fork loop, which stopped every worker and exited 1 when one died)."""
    seeded = seed(tmp_path / "var")
    port = free_port()
    log = tmp_path / "relay.log"
    proc = start(
        ["--data-dir", str(seeded.data), "relay", "--port", str(port), "--workers", "2"],
        log,
        MAILVEIL_SMARTHOST_PORT=str(sink.port),
        MAILVEIL_RELAY_ALLOW_PLAIN_AUTH_ON_LOOPBACK="true",
    )
    data = message(from_=SELLER_ADDRESS, to=seeded.alias, subject="[shipping] Hi")

    def relay_some() -> Counter[int]:
        """Four connections open at once, a message over each: which worker holds each."""
        clients = [smtplib.SMTP("127.0.0.1", port, timeout=15) for _ in range(4)]
        try:
            holders = Counter(_holder(port, client.sock.getsockname()[1]) for client in clients)
            for client in clients:
                client.login("shop", seeded.token)
                client.sendmail(SELLER_ADDRESS, [seeded.alias], data)
        finally:
            for client in clients:
                client.quit()
        return holders

    try:
        wait_for_smtp(port, proc, log)
        wait_until("both workers ready", lambda: len(ready_children(log)) == 2, log)
        first = ready_children(log)
        assert sorted(first) == ["relay", "relay 2"] and proc.pid not in first.values()
        # Spread evenly (relay.balance): left to the kernel, one worker took them all.
        assert relay_some() == Counter({first["relay"]: 2, first["relay 2"]: 2})
        os.kill(first["relay 2"], signal.SIGKILL)
        wait_until("a new relay 2", lambda: ready_children(log)["relay 2"] != first["relay 2"], log)
        [died] = events(log, "serve_child_died")
        assert died["process"] == "relay 2" and died["exit"] == "killed by SIGKILL"
        last = ready_children(log)
        assert relay_some() == Counter({last["relay"]: 2, last["relay 2"]: 2})
        assert last["relay"] == first["relay"]  # the other worker was left alone
    finally:
        code = stop(proc)
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert len(sink.messages) == 8
    assert f"mailveil relay on 127.0.0.1:{port} (SMTP, 2 process(es))" in output
    assert not any(alive(pid) for pid in last.values())
    assert "Traceback" not in output
