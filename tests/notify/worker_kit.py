"""Running `mailveil worker` in its own process against the test's database, relay and
broker: settings passed as MAILVEIL_* variables, the broker's queues removed afterwards."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from mailveil.config import Settings

URLS = {
    "redis": "redis://127.0.0.1:6379/11",  # a database number no other test uses
    "amqp": "amqp://guest:guest@127.0.0.1:5672/",
}


def reachable(url: str) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def broker_or_skip(name: str) -> str:
    url = URLS[name]
    if not reachable(url):
        if os.environ.get("MAILVEIL_REQUIRE_POSTGRES") == "1":  # CI: the servers must be there
            pytest.fail(f"{name} broker unreachable at {url}")
        pytest.skip(f"{name} broker unreachable")
    return url


def environment(settings: Settings) -> dict[str, str]:
    """The process environment that makes a worker load exactly the test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path | str | int | float | bool):
            env[f"MAILVEIL_{f.name.upper()}"] = str(value)
    return env


def spawn_worker(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "mailveil", "worker", "--threads", "2", *args],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def stop_worker(proc: subprocess.Popen[bytes], log: Path) -> int:
    """SIGTERM and wait: the worker's exit code (it must stop cleanly on its own)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError("the worker did not stop on SIGTERM:\n" + tail(log)) from None


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def wait_for(predicate: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n" + (tail(log) if log else ""))


def remove_queues(settings: Settings) -> None:
    """Delete what a run declared on the broker (its own queue name)."""
    from mailveil.notify.queue import declare_actor, dramatiq_broker

    broker = dramatiq_broker(settings)
    try:
        declare_actor(broker, lambda: None, queue_name=settings.worker_queue)  # type: ignore[arg-type,return-value]
        broker.flush_all()
        channel = getattr(broker, "channel", None)
        if channel is not None:
            q = settings.worker_queue
            for name in (q, f"{q}.DQ", f"{q}.XQ"):
                channel.queue_delete(name)
    finally:
        broker.close()


RUN_TO_END = (
    "import sys\n"
    "from mailveil.config import load_settings\n"
    "from mailveil.notify.queue import run_to_end\n"
    "from mailveil.runtime import Runtime\n"
    "run_to_end(Runtime.open(load_settings()), int(sys.argv[1]))\n"
)


def run_send_in_process(settings: Settings, send_id: int, timeout: float = 60) -> None:
    """A fresh worker process drives the send to its end (the in-process worker of
    `sends start`); its exit code and output are checked."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_TO_END, str(send_id)],
        env=environment(settings),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
