"""Several `mailveil worker` processes split one stage (issue 17): each claims batches of the
stage's recipients (``notify.claims``) while the send's coordinator alone decides the gates.
Real processes on the machine's real brokers, the real relay and a counting sink, on
PostgreSQL and on SQLite (one file): every eligible customer gets the mail exactly once,
also when one worker is SIGKILLed mid-stage (its batch is claimed again once its lease
lapsed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import notify_kit as kit
import pytest
from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SmtpSession
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import Engine, select, text
from worker_kit import broker_or_skip, remove_queues, spawn_worker, stop_worker, tail, wait_for

from dbkit import PG_URL, private_pg_engine
from mailveil.config import Settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.models import LedgerEntry
from mailveil.notify.audience import Entry
from mailveil.notify.models import Recipient
from mailveil.notify.queue import Dispatcher
from mailveil.notify.sends import counts_of, create_send, get_send

CUSTOMERS = 240
INELIGIBLE = set(range(12, CUSTOMERS + 1, 12))
ELIGIBLE = sorted(set(range(1, CUSTOMERS + 1)) - INELIGIBLE)
SINK_DELAY = 0.02  # a smarthost that takes its time: a stage lasts long enough to share
WORKERS = 3


class SlowSink(kit.Sink):
    async def handle_DATA(self, server: Any, session: SmtpSession, envelope: Envelope) -> str:
        await asyncio.sleep(SINK_DELAY)
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def _database(kind: str, tmp_path: Path, pg_available: bool) -> Iterator[tuple[Engine, str]]:
    if kind == "sqlite":
        engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
        try:
            yield engine, str(engine.url)
        finally:
            engine.dispose()
        return
    if not pg_available:
        pytest.skip("PostgreSQL not reachable")
    with private_pg_engine("mv_split") as engine:
        with engine.connect() as conn:
            schema = conn.execute(text("SHOW search_path")).scalar_one()
        yield engine, f"{PG_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=[("postgres", "redis"), ("postgres", "amqp"), ("sqlite", "redis")],
                ids=lambda p: "-".join(p))  # fmt: skip
def env(
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    _pg_available: bool,
) -> Iterator[NotifyEnv]:
    db, broker = request.param
    url = broker_or_skip(broker)
    with _database(db, tmp_path, _pg_available) as (engine, database_url):
        upgrade(engine)
        monkeypatch.setattr(kit, "Sink", SlowSink)
        tuned = kit.notify_settings(
            settings.with_overrides(database_url=database_url),
            notify_broker_url=url,
            worker_queue=f"mv_test_{uuid.uuid4().hex[:12]}",  # this run's own queue
            notify_stages="0.1,0.5,1",
            notify_max_ineligible_rate=0.5,
            notify_lease_seconds=4.0,
            notify_reconcile_after_seconds=2.0,  # the relay records "delivered" lazily
            worker_resume_every_seconds=1.0,
            worker_detect_every_seconds=0.0,
            worker_sweep_every_seconds=0.0,
            worker_reports_every_seconds=0.0,
            worker_anomaly_hour=-1,
            checkpoint_every_seconds=0.0,
        )
        try:
            yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS)
        finally:
            remove_queues(tuned)


def _send(env: NotifyEnv) -> int:
    session = env.session()
    add_facts(session, gift_facts(ELIGIBLE))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    entries = [Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)]
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=entries, actor="apikey:test")  # fmt: skip
    session.commit()
    assert send.status == "ready", send.approval_reason
    return send.id


def _queue(env: NotifyEnv, send_id: int) -> None:
    dispatcher = Dispatcher(env.runtime)
    try:
        assert dispatcher.start(send_id) == "queued"
    finally:
        dispatcher._actor.broker.close()


def _status(env: NotifyEnv, send_id: int) -> str:
    with env.session_factory() as fresh:
        return get_send(fresh, send_id).status


def _processes(env: NotifyEnv, send_id: int) -> dict[str, int]:
    """host:pid -> recipients that worker process's helpers delivered."""
    with env.session_factory() as s:
        owners = s.scalars(
            select(Recipient.claimed_by).where(
                Recipient.send_id == send_id, Recipient.state == "delivered"
            )
        ).all()
    out: dict[str, int] = {}
    for owner in owners:
        assert owner is not None, "a recipient delivered without a claim"
        if f":{os.getpid()}:" in owner:
            continue  # the coordinator's chain, named where the send was queued (here)
        proc = owner.rsplit(":", 1)[0]
        out[proc] = out.get(proc, 0) + 1
    return out


def _check_exactly_once(env: NotifyEnv, send_id: int) -> None:
    env.flush()
    got = env.delivered_numbers()
    assert len(got) == len(set(got)), "a customer got the mail twice"
    assert got == ELIGIBLE, "a customer never got the mail"
    with env.session_factory() as s:
        assert counts_of(s, send_id) == {"delivered": len(ELIGIBLE), "ineligible": len(INELIGIBLE)}
        ledgered = s.scalars(
            select(LedgerEntry.subject).where(
                LedgerEntry.kind == "send", LedgerEntry.ref == f"send:{send_id}"
            )
        ).all()
    assert sorted(ledgered) == sorted(f"customer:{env.customer(n).id}" for n in ELIGIBLE)


def test_worker_processes_split_a_stage_and_deliver_each_recipient_once(
    env: NotifyEnv, tmp_path: Path
) -> None:
    send_id = _send(env)
    log = tmp_path / "workers.log"
    procs = [spawn_worker(env.settings, log, "--no-scheduler") for _ in range(WORKERS)]
    try:
        _queue(env, send_id)
        wait_for(lambda: _status(env, send_id) == "completed"
                 or any(p.poll() is not None for p in procs), 120, "the send to complete",
                 log)  # fmt: skip
        assert all(p.poll() is None for p in procs), tail(log)
    finally:
        codes = [stop_worker(p, log) for p in procs]
    assert codes == [0] * WORKERS, tail(log)
    _check_exactly_once(env, send_id)
    shares = _processes(env, send_id)
    if env.settings.db_url.startswith("sqlite"):
        return  # one writer at a time: exactly once holds, but the split is not promised
    assert len(shares) >= 2, f"helpers of fewer than 2 processes delivered: {shares}\n" + tail(log)


def test_a_worker_killed_mid_batch_loses_nobody_and_doubles_nobody(
    env: NotifyEnv, tmp_path: Path
) -> None:
    send_id = _send(env)
    log = tmp_path / "workers.log"
    # Each with its scheduler (they share its slots), so whichever is killed, another
    # resumes the send should the victim have held the coordinator's lease.
    procs = [spawn_worker(env.settings, log) for _ in range(WORKERS)]
    try:
        _queue(env, send_id)
        found: list[subprocess.Popen[bytes]] = []

        def victim_mid_batch() -> bool:
            """A worker holds claims (pending or in flight) mid-send. Any may be it: which
            processes' helpers get batches is not promised (one quick worker may take
            them all)."""
            if len(env.sink.recipients()) < 60:
                return False
            with env.session_factory() as s:
                for proc in procs:
                    held = s.scalar(
                        select(Recipient.id)
                        .where(
                            Recipient.send_id == send_id,
                            Recipient.state.in_(("pending", "delivering")),
                            Recipient.claimed_by.like(f"%:{proc.pid}:%"),
                        )
                        .limit(1)
                    )
                    if held is not None:
                        found.append(proc)
                        return True
            return False

        wait_for(victim_mid_batch, 120, "a worker to hold a batch mid-stage", log)
        victim = found[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert victim.returncode == -signal.SIGKILL
        assert len(env.sink.recipients()) < len(ELIGIBLE), "finished before the kill"
        others = [p for p in procs if p is not victim]
        wait_for(lambda: _status(env, send_id) == "completed"
                 or any(p.poll() is not None for p in others), 120,
                 "the others to finish the send", log)  # fmt: skip
        assert all(p.poll() is None for p in others), tail(log)
    finally:
        killed = [p for p in procs if p.returncode == -signal.SIGKILL]
        codes = [stop_worker(p, log) for p in procs if p not in killed]
    assert len(killed) == 1 and codes == [0] * (WORKERS - 1), tail(log)
    _check_exactly_once(env, send_id)
