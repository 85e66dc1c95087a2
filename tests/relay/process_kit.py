"""Test kit for mailveil as real processes: a data directory initialised and seeded by the
CLI and the contacts functions (a customer, a seller with an order and the alias between
them, a seller API key), the launcher, a clean child environment, start/stop and a wait for
the relay's SMTP port."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from relay_server_kit import SELLER_ADDRESS

import world_kit as world
from mailveil.auth.keys import Role, issue_key
from mailveil.config import load_settings
from mailveil.db.base import utcnow
from mailveil.runtime import Runtime

LAUNCHER = [sys.executable, "-m", "mailveil"]
REAL = "Real.Customer@private-mailbox.example"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONWARNINGS": "error"}, **extra)
    return env


@dataclass
class Seeded:
    data: Path
    alias: str
    reverse: str
    token: str


def seed(data: Path) -> Seeded:
    init = subprocess.run(
        [*LAUNCHER, "--data-dir", str(data), "init"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    assert init.returncode == 0, init.stderr
    settings = load_settings(env={}, data_dir=data)
    runtime = Runtime.open(settings)
    try:
        with runtime.session_factory() as session:
            customer = world.customer(
                session, runtime.vault, 1, external_id="c1", email=REAL, country="DE"
            )
            seller = world.seller(
                session,
                external_id="s1",
                display_name="Shop",
                attributes={"sending_addresses": [SELLER_ADDRESS]},
            )
            world.order(session, customer, seller, ext="o1", placed_at=utcnow())
            result = world.disclosure(session, world.parts_of(runtime), customer, seller)
            token = issue_key(session, Role.SELLER, principal_id=seller.id).token
            session.commit()
    finally:
        runtime.engine.dispose()
    assert result.alias and result.reverse_alias
    return Seeded(data, result.alias, result.reverse_alias, token)


def wait_for_smtp(port: int, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode}: {log.read_text()}")
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
                assert client.ehlo()[0] == 250
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"no SMTP on {port} within 60 s: {log.read_text()}")
            time.sleep(0.2)


def start(
    args: list[str], log: Path, launcher: list[str] = LAUNCHER, **env: str
) -> subprocess.Popen[str]:
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*launcher, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(**env),
        )


def events(log: Path, event: str) -> list[dict[str, object]]:
    """The JSON log lines of ``log`` whose event is ``event``."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def ready_children(log: Path) -> dict[str, int]:
    """The supervisor's children that said they serve, by name (the latest of each)."""
    return {str(r["process"]): int(str(r["pid"])) for r in events(log, "serve_child_ready")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(what: str, done: Callable[[], bool], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {seconds:.0f} s: {log.read_text()[-4000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)
        raise


__all__ = [
    "LAUNCHER",
    "REAL",
    "Seeded",
    "alive",
    "child_env",
    "events",
    "ready_children",
    "seed",
    "start",
    "stop",
    "wait_for_smtp",
    "wait_until",
]
