"""`mailveil worker` in its own process on the machine's real Redis and RabbitMQ: it drives a
send queued by the API's dispatcher, runs the periodic jobs, and when it is SIGKILLed
mid-stage a second worker process finishes the send by itself once the lease lapsed (nobody
calls start again, nobody gets the mail twice)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import notify_kit as kit
import pytest
from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SmtpSession
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import select
from worker_kit import broker_or_skip, remove_queues, spawn_worker, stop_worker, tail, wait_for

from mailveil.api.idempotency import IdempotencyRecord
from mailveil.auth.keys import Role, issue_key
from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.verify import verify_ledger
from mailveil.notify.audience import Entry
from mailveil.notify.queue import Dispatcher
from mailveil.notify.sends import counts_of, create_send, get_send
from mailveil.worker.models import WorkerJob

CUSTOMERS = 120
INELIGIBLE = set(range(10, CUSTOMERS + 1, 10))
ELIGIBLE = sorted(set(range(1, CUSTOMERS + 1)) - INELIGIBLE)
SINK_DELAY = 0.03


class SlowSink(kit.Sink):
    async def handle_DATA(self, server: Any, session: SmtpSession, envelope: Envelope) -> str:
        await asyncio.sleep(SINK_DELAY)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(params=["redis", "amqp"])
def env(
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[NotifyEnv]:
    url = broker_or_skip(request.param)
    engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
    upgrade(engine)
    monkeypatch.setattr(kit, "Sink", SlowSink)
    tuned = kit.notify_settings(
        settings.with_overrides(database_url=str(engine.url)),
        notify_broker_url=url,
        worker_queue=f"mv_test_{uuid.uuid4().hex[:12]}",  # this run's own queue
        notify_stages="0.1,0.5,1",
        notify_max_ineligible_rate=0.5,
        notify_lease_seconds=5.0,
        notify_reconcile_after_seconds=3.0,  # the relay records "delivered" lazily
        worker_resume_every_seconds=1.0,
        worker_detect_every_seconds=2.0,
        worker_sweep_every_seconds=2.0,
        worker_reports_every_seconds=0.0,
        worker_anomaly_hour=-1,
        checkpoint_every_seconds=2.0,
    )
    try:
        yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS)
    finally:
        remove_queues(tuned)
        engine.dispose()


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
    """What `POST /v1/sends/{id}/start` does with a broker."""
    dispatcher = Dispatcher(env.runtime)
    try:
        assert dispatcher.start(send_id) == "queued"
    finally:
        dispatcher._actor.broker.close()


def _status(env: NotifyEnv, send_id: int) -> str:
    with env.session_factory() as fresh:
        return get_send(fresh, send_id).status


def _check_outcome(env: NotifyEnv, send_id: int) -> None:
    env.flush()
    got = env.delivered_numbers()
    assert len(got) == len(set(got)), "a customer got the mail twice"
    assert got == ELIGIBLE
    with env.session_factory() as s:
        assert counts_of(s, send_id) == {"delivered": len(ELIGIBLE), "ineligible": len(INELIGIBLE)}
        ledgered = s.scalars(
            select(LedgerEntry.subject).where(
                LedgerEntry.kind == "send", LedgerEntry.ref == f"send:{send_id}"
            )
        ).all()
        assert sorted(ledgered) == sorted(f"customer:{env.customer(n).id}" for n in ELIGIBLE)
    report = verify_ledger(env.runtime.engine, env.settings, env.runtime.ledger.signer.public_key)
    assert report.ok, report.problems


def test_worker_process_drives_a_queued_send_and_runs_the_jobs(
    env: NotifyEnv, tmp_path: Path
) -> None:
    send_id = _send(env)
    with env.session_factory() as s:  # an Idempotency-Key answer two days old
        key = issue_key(s, Role.ADMIN, label="old client")
        s.add(IdempotencyRecord(api_key_id=key.key.id, key="k1", method="POST", path="/v1/x",
                                request_hash=b"\0" * 32, status_code=201, response_body="{}",
                                created_at=utcnow() - timedelta(days=2)))  # fmt: skip
        s.commit()
    log = tmp_path / "worker.log"
    proc = spawn_worker(env.settings, log)
    try:
        _queue(env, send_id)
        wait_for(lambda: _status(env, send_id) == "completed" or proc.poll() is not None,
                 60, "the send to complete", log)  # fmt: skip
        assert proc.poll() is None, tail(log)

        def jobs_ran() -> bool:
            with env.session_factory() as s:
                done = {j.name: j.outcome for j in s.scalars(select(WorkerJob))}
                left = s.scalar(select(IdempotencyRecord.key))
            wanted = ("detect", "checkpoint", "sweep_idempotency")
            return all(done.get(n) == "ok" for n in wanted) and left is None

        wait_for(jobs_ran, 30, "the periodic jobs", log)
    finally:
        code = stop_worker(proc, log)
    assert code == 0, tail(log)
    _check_outcome(env, send_id)


def test_a_killed_worker_s_send_is_finished_by_another_on_its_own(
    env: NotifyEnv, tmp_path: Path
) -> None:
    send_id = _send(env)
    log = tmp_path / "worker.log"
    first = spawn_worker(env.settings, log, "--no-scheduler")
    try:
        _queue(env, send_id)
        wait_for(lambda: len(env.sink.recipients()) >= 25 or first.poll() is not None,
                 60, "25 deliveries", log)  # fmt: skip
        assert first.poll() is None, tail(log)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    assert len(env.sink.recipients()) < len(ELIGIBLE), "finished before the kill"
    assert _status(env, send_id) == "running"

    second = spawn_worker(env.settings, log)  # nobody calls start again
    try:
        wait_for(lambda: _status(env, send_id) == "completed" or second.poll() is not None,
                 90, "the second worker to finish the send", log)  # fmt: skip
        assert second.poll() is None, tail(log)
    finally:
        code = stop_worker(second, log)
    assert code == 0, tail(log)
    _check_outcome(env, send_id)
