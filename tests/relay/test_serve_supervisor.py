"""`mailveil serve` as a supervisor (issue 16, mixed load): the API and the relay each in a
process of their own, as real processes on loopback. Both answer; the API's process runs at
lower priority; a relay process killed with SIGKILL is restarted and relays again; SIGTERM
stops every child and exits 0; a child that cannot start is one clear error. Port-in-use
errors are in tests/ops/test_ops_first_hour.py."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from process_kit import (
    REAL,
    Seeded,
    alive,
    events,
    ready_children,
    seed,
    start,
    stop,
    wait_for_smtp,
    wait_until,
)
from relay_server_kit import SELLER_ADDRESS, message

from mailveil.demo.harness import free_port
from smtp_kit import Sink

pytestmark = pytest.mark.slow  # the API and the relay as real processes


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink(port=free_port()) as running:
        yield running


def _relay_one(port: int, seeded: Seeded, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.login("shop", seeded.token)
        data = message(from_=SELLER_ADDRESS, to=seeded.alias, subject=subject)
        client.sendmail(SELLER_ADDRESS, [seeded.alias], data)


def _healthy(api_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=10) as r:
            return r.status == 200
    except OSError:  # not listening yet (--single-process), or still starting
        return False


def test_serve_runs_api_and_relay_apart_restarts_a_killed_relay_and_stops_cleanly(
    tmp_path: Path, sink: Sink
) -> None:
    seeded = seed(tmp_path / "var")
    api_port, relay_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    proc = start(
        ["--data-dir", str(seeded.data), "serve", "--port", str(api_port)],
        log,
        MAILVEIL_RELAY_PORT=str(relay_port),
        MAILVEIL_SMARTHOST_PORT=str(sink.port),
        MAILVEIL_RELAY_ALLOW_PLAIN_AUTH_ON_LOOPBACK="true",
        MAILVEIL_API_NICE="7",
    )
    try:
        wait_for_smtp(relay_port, proc, log)
        wait_until("both children ready", lambda: len(ready_children(log)) == 2, log)
        children = ready_children(log)
        assert proc.pid not in children.values()
        assert _healthy(api_port)
        _relay_one(relay_port, seeded, "[shipping] before")
        # The API's process gave up priority; the relay's did not.
        mine = os.getpriority(os.PRIO_PROCESS, proc.pid)
        assert os.getpriority(os.PRIO_PROCESS, children["api"]) == min(mine + 7, 19)
        assert os.getpriority(os.PRIO_PROCESS, children["relay"]) == mine

        os.kill(children["relay"], signal.SIGKILL)
        wait_until(
            "a new relay process",
            lambda: ready_children(log)["relay"] != children["relay"],
            log,
        )
        [died] = events(log, "serve_child_died")
        assert died["process"] == "relay" and died["exit"] == "killed by SIGKILL"
        assert float(str(died["restart_in_seconds"])) > 0
        _relay_one(relay_port, seeded, "[shipping] after")
        assert _healthy(api_port)
        assert ready_children(log)["api"] == children["api"]  # the API was left alone
        last = ready_children(log)
    finally:
        code = stop(proc)
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "mailveil relay on" in output and "separate processes" in output
    assert [m.rcpt_tos for m in sink.messages] == [(REAL,), (REAL,)]
    assert not any(alive(pid) for pid in last.values())
    assert "Traceback" not in output
    assert REAL.lower() not in output.lower()


def test_serve_with_two_relay_processes_and_single_process_mode(tmp_path: Path, sink: Sink) -> None:
    seeded = seed(tmp_path / "var")
    env = {
        "MAILVEIL_SMARTHOST_PORT": str(sink.port),
        "MAILVEIL_RELAY_ALLOW_PLAIN_AUTH_ON_LOOPBACK": "true",
    }
    for mode in (["--relay-workers", "2"], ["--single-process"]):
        api_port, relay_port = free_port(), free_port()
        log = tmp_path / f"serve{mode[0]}.log"
        proc = start(
            ["--data-dir", str(seeded.data), "serve", "--port", str(api_port), *mode],
            log,
            MAILVEIL_RELAY_PORT=str(relay_port),
            **env,
        )
        try:
            wait_for_smtp(relay_port, proc, log)
            wait_until("/healthz", lambda: _healthy(api_port), log)  # noqa: B023
            for _ in range(4):  # a connection each: the kernel spreads them over the workers
                _relay_one(relay_port, seeded, "[shipping] Hi")
            children = ready_children(log)
        finally:
            code = stop(proc)
        output = log.read_text()
        assert code == 0, output[-4000:]
        if mode[0] == "--single-process":
            assert children == {} and "one process with the API" in output
        else:
            assert sorted(children) == ["api", "relay 1", "relay 2"]
            assert "(SMTP, 2 process(es))" in output
    assert len(sink.messages) == 8


def test_a_child_that_cannot_start_is_one_clear_error(tmp_path: Path) -> None:
    """The relay's metrics port is taken: its process dies starting, the supervisor stops
    the API's and exits 1 naming the process."""
    seeded = seed(tmp_path / "var")
    api_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        log = tmp_path / "serve.log"
        proc = start(
            ["--data-dir", str(seeded.data), "serve", "--port", str(api_port)],
            log,
            MAILVEIL_RELAY_PORT=str(free_port()),
            MAILVEIL_METRICS_PORT=str(taken.getsockname()[1]),
        )
        code = proc.wait(timeout=120)
    output = log.read_text()
    assert code == 1, output[-4000:]
    assert "error: the relay process could not start (exit code 1" in output
    assert "mailveil API on" not in output  # never announced
    started = {str(r["process"]): int(str(r["pid"])) for r in events(log, "serve_child_started")}
    assert sorted(started) == ["api", "relay"]
    assert not any(alive(pid) for pid in started.values())


# Runs `mailveil` with one child's serving call wrapped: the supervisor's stop reaches that
# process just before the call that installs its stop handlers (uvicorn's Server.serve, the
# relay's serve_until_signalled). SIGTERM is blocked, the supervisor told to stop, and the
# signal let through once it is pending here: the stop that arrived early, every time.
_STOP_EARLY = """
import importlib, os, signal, sys, time
module, _, name = sys.argv.pop(1).partition(":")
owner = importlib.import_module(module)
*path, attr = name.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, attr)

def stopped_early(*args, **kwargs):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.kill(os.getppid(), signal.SIGTERM)
    deadline = time.monotonic() + 30
    while signal.SIGTERM not in signal.sigpending() and time.monotonic() < deadline:
        time.sleep(0.001)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    return original(*args, **kwargs)

setattr(owner, attr, stopped_early)
from mailveil.cli import main
main()
"""


def _at(record: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(record["timestamp"]))


@pytest.mark.parametrize(
    "hook", ["uvicorn:Server.serve", "mailveil.relay.workers:serve_until_signalled"]
)
def test_a_stop_right_after_start_is_quick_and_clean(tmp_path: Path, hook: str) -> None:
    """The stop reaches a child before its server took the stop signals: the child honours
    it (before the fix the API's process ignored it, and the supervisor waited the 30 s of
    stop_timeout, killed it and exited 1)."""
    seeded = seed(tmp_path / "var")
    log = tmp_path / "serve.log"
    proc = start(
        ["--data-dir", str(seeded.data), "serve", "--port", str(free_port())],
        log,
        [sys.executable, "-c", _STOP_EARLY, hook],
        MAILVEIL_RELAY_PORT=str(free_port()),
    )
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "serve_child_killed" not in output and "serve_child_stopped_badly" not in output
    assert "mailveil API on" not in output  # stopped before it was announced
    started = events(log, "serve_child_started")
    assert sorted(str(r["process"]) for r in started) == ["api", "relay"]
    [stopped] = events(log, "serve_stopped")
    took = (_at(stopped) - max(_at(r) for r in started)).total_seconds()
    assert took < 10, output[-4000:]
    assert not any(alive(int(str(r["pid"]))) for r in started)
    assert "Traceback" not in output
