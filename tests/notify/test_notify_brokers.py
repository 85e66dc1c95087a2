"""Sends driven through Dramatiq on the machine's real Redis and RabbitMQ: a real dramatiq
Worker in this process consumes ``notify.queue``'s actor (soaks come back as delayed
messages) and delivers through the real relay into the sink. Each run uses its own queue
name, flushed before and removed after."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dramatiq
import notify_kit as kit
import pytest
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register

from mailveil.config import Settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.notify.audience import Entry
from mailveil.notify.queue import declare_actor, dramatiq_broker
from mailveil.notify.sends import counts_of, create_send, get_send

URLS = {
    "redis": "redis://127.0.0.1:6379/11",  # a database number no other test uses
    "amqp": "amqp://guest:guest@127.0.0.1:5672/",
}
CUSTOMERS = 20
ELIGIBLE = [n for n in range(1, CUSTOMERS + 1) if n % 5]  # every fifth has no gift fact


def reachable(url: str) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(params=sorted(URLS))
def broker_url(request: pytest.FixtureRequest) -> str:
    url = URLS[request.param]
    if not reachable(url):
        if os.environ.get("MAILVEIL_REQUIRE_POSTGRES") == "1":  # CI: the servers must be there
            pytest.fail(f"{request.param} broker unreachable at {url}")
        pytest.skip(f"{request.param} broker unreachable")
    return url


@pytest.fixture
def env(settings: Settings, tmp_path: Path, broker_url: str) -> Iterator[NotifyEnv]:
    engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
    upgrade(engine)
    tuned = kit.notify_settings(
        settings,
        notify_broker_url=broker_url,
        notify_stages="0.2,1",
        notify_min_stage_size=5,
        notify_soak_seconds=0.3,  # each soak comes back as a delayed message
        notify_max_ineligible_rate=0.5,
    )
    try:
        yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS)
    finally:
        engine.dispose()


def _remove_queues(broker: Any, queue: str) -> None:
    broker.flush_all()
    channel = getattr(broker, "channel", None)  # RabbitMQ: delete what the run declared
    if channel is not None:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)


def test_send_through_a_real_broker(env: NotifyEnv) -> None:
    session = env.session()
    add_facts(session, gift_facts(ELIGIBLE))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=[Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)],
                       actor="apikey:test")  # fmt: skip
    session.commit()
    assert send.status == "ready", send.approval_reason

    queue = f"mailveil_notify_test_{uuid.uuid4().hex[:12]}"
    broker = dramatiq_broker(env.settings)
    actor = declare_actor(broker, lambda: env.runtime, queue_name=queue)
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        actor.send(send.id)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            with env.runtime.session_factory() as fresh:  # a new snapshot each time
                if get_send(fresh, send.id).status not in ("ready", "running"):
                    break
            time.sleep(0.1)
    finally:
        worker.stop()
        _remove_queues(broker, queue)
        broker.close()
    env.flush()
    session.close()
    session = env.runtime.session_factory()
    assert get_send(session, send.id).status == "completed"
    got = env.delivered_numbers()
    assert got == ELIGIBLE  # each eligible customer exactly once, nobody ineligible
    assert counts_of(session, send.id) == {
        "delivered": len(ELIGIBLE),
        "ineligible": CUSTOMERS - len(ELIGIBLE),
    }
