"""Crash tests: a real worker process is SIGKILLed mid-stage at a seeded random point (after
some deliveries reached the sink), a second worker process resumes the send. Nobody gets the
mail twice, every eligible customer gets it by the end, nobody ineligible gets it, and the
ledger verifies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import notify_kit as kit
import pytest
from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SmtpSession
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import select, update

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory, writing
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.verify import verify_ledger
from mailveil.notify.audience import Entry
from mailveil.notify.models import Send
from mailveil.notify.sends import counts_of, create_send, get_send

pytestmark = pytest.mark.slow  # worker processes killed and resumed

CUSTOMERS = 120
INELIGIBLE = set(range(10, CUSTOMERS + 1, 10))  # no gift fact: never sent to
ELIGIBLE = sorted(set(range(1, CUSTOMERS + 1)) - INELIGIBLE)
SINK_DELAY = 0.03  # seconds per message at the smarthost: the worker is mid-stage for a while

WORKER = """
import json, sys
from mailveil.config import load_settings
from mailveil.notify.queue import run_to_end
from mailveil.runtime import Runtime
from pathlib import Path
cfg = json.loads(sys.argv[1])
values = cfg["settings"]
values.update({k: Path(values[k]) for k in cfg["paths"]})
settings = load_settings(env={}, **values)
run_to_end(Runtime.open(settings), cfg["send"])
"""


class SlowSink(kit.Sink):
    async def handle_DATA(self, server: Any, session: SmtpSession, envelope: Envelope) -> str:
        await asyncio.sleep(SINK_DELAY)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyEnv]:
    """A file SQLite database the test, its relay and the worker processes share."""
    engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
    upgrade(engine)
    monkeypatch.setattr(kit, "Sink", SlowSink)
    tuned = kit.notify_settings(
        settings.with_overrides(database_url=str(engine.url)),
        notify_stages="0.1,0.5,1",
        notify_max_ineligible_rate=0.5,
    )
    try:
        yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS)
    finally:
        engine.dispose()


def worker_settings(settings: Settings) -> dict[str, Any]:
    """The settings a worker process loads: every plain value of the test's own."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, str | int | float | bool):
            out[f.name] = value
    return out


def spawn(env: NotifyEnv, send_id: int) -> subprocess.Popen[bytes]:
    paths = [f.name for f in dataclasses.fields(env.settings)
             if isinstance(getattr(env.settings, f.name), Path)]  # fmt: skip
    cfg = {"settings": worker_settings(env.settings), "paths": paths, "send": send_id}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(cfg)],
        env=clean,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    return proc.stderr.read().decode(errors="replace")[-3000:]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("seed", [11, 23, 47])
def test_sigkill_mid_stage_then_resume(env: NotifyEnv, seed: int) -> None:
    rng = random.Random(seed)
    session = env.session()
    add_facts(session, gift_facts(ELIGIBLE))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    entries = [Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)]
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=entries, actor="apikey:test")  # fmt: skip
    session.commit()
    assert send.status == "ready", send.approval_reason
    kill_after = rng.randint(3, len(ELIGIBLE) - 30)

    first = spawn(env, send.id)
    try:
        wait_for(
            lambda: len(env.sink.recipients()) >= kill_after or first.poll() is not None,
            25,
            f"{kill_after} deliveries",
        )
        assert first.poll() is None, _stderr(first)
        time.sleep(rng.uniform(0, SINK_DELAY * 2))  # land anywhere within a transaction
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.stderr is not None
        first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    at_kill = len(env.sink.recipients())
    session.expire_all()
    assert get_send(session, send.id).status == "running"  # mid-send, not finished
    assert at_kill < len(ELIGIBLE), "the worker finished before it was killed"
    # End the read and take the write lock first: on SQLite a read transaction that then
    # writes fails at once with "database is locked" when the relay committed in between.
    writing(session)

    # The dead worker's lease would lapse after its 60 s; let that time pass at once.
    session.execute(
        update(Send).where(Send.id == send.id).values(lease_until=utcnow() - timedelta(seconds=1))
    )
    session.commit()
    second = spawn(env, send.id)
    try:
        _, err = second.communicate(timeout=25)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err.decode(errors="replace")[-2000:]
    env.flush()

    session.expire_all()
    assert get_send(session, send.id).status == "completed"
    got = env.delivered_numbers()
    assert len(got) == len(set(got)), "a customer got the mail twice"  # at most once
    assert got == ELIGIBLE  # full resumption, nobody ineligible
    counts = counts_of(session, send.id)
    assert counts == {"delivered": len(ELIGIBLE), "ineligible": len(INELIGIBLE)}, counts
    ledgered = session.scalars(
        select(LedgerEntry.subject).where(
            LedgerEntry.kind == "send", LedgerEntry.ref == f"send:{send.id}"
        )
    ).all()
    assert sorted(ledgered) == sorted(f"customer:{env.customer(n).id}" for n in ELIGIBLE)
    report = verify_ledger(env.runtime.engine, env.settings, env.runtime.ledger.signer.public_key)
    assert report.ok, report.problems
