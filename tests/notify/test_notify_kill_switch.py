"""The kill switch on an in-flight send: a worker mid-stage (a slow smarthost) stops within
seconds of the kill and delivers nothing after it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import notify_kit as kit
import pytest
from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SmtpSession
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import select

from mailveil.ledger.models import LedgerEntry
from mailveil.notify.audience import Entry
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import counts_of, create_send, get_send, kill

CUSTOMERS = 150
STOP_WITHIN = 5.0  # seconds: the worker looks at the switch before each group of 20


class SlowSink(kit.Sink):
    async def handle_DATA(self, server: Any, session: SmtpSession, envelope: Envelope) -> str:
        await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def env(
    settings: kit.Settings,
    notify_db: kit.sessionmaker[kit.Session],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[NotifyEnv]:
    monkeypatch.setattr(kit, "Sink", SlowSink)
    # One stage for everyone: the kill must land inside it.
    tuned = kit.notify_settings(settings, notify_stages="1")
    yield from kit.open_env(tuned, notify_db, CUSTOMERS)


def test_kill_stops_an_in_flight_stage(env: NotifyEnv) -> None:
    session = env.session()
    everyone = list(range(1, CUSTOMERS + 1))
    add_facts(session, gift_facts(everyone))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=[Entry(f"c{n}", None) for n in everyone],
                       actor="apikey:creator")  # fmt: skip
    session.commit()
    worker = threading.Thread(target=run_to_end, args=(env.runtime, send.id), daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while len(env.sink.recipients()) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(env.sink.recipients()) >= 25, "the send never got going"

    kill(session, env.runtime.ledger, send.id, actor="apikey:oncall")
    session.commit()
    killed_at = time.monotonic()
    worker.join(STOP_WITHIN)
    assert not worker.is_alive(), f"the worker still runs {STOP_WITHIN} s after the kill"
    env.flush()
    after_stop = len(env.sink.recipients())
    time.sleep(1.0)  # anything still trickling out would show now
    env.flush()
    assert len(env.sink.recipients()) == after_stop
    assert time.monotonic() - killed_at < STOP_WITHIN + 2

    session.expire_all()
    done = get_send(session, send.id)
    assert done.status == "killed" and done.stopped_by == "apikey:oncall"
    counts = counts_of(session, send.id)
    delivered = env.delivered_numbers()
    assert 25 <= len(delivered) < CUSTOMERS, "the kill landed after the stage was over"
    assert len(delivered) == len(set(delivered)) == counts.get("delivered", 0), counts
    assert counts.get("delivering", 0) == 0  # the last group was settled, not left in flight
    assert counts.get("pending", 0) == CUSTOMERS - len(delivered)
    kinds = session.scalars(
        select(LedgerEntry.kind).where(LedgerEntry.ref == f"send:{send.id}")
    ).all()
    assert kinds.count("send_killed") == 1 and kinds.count("send") == len(delivered)
    # Starting it again does nothing: a killed send stays killed.
    run_to_end(env.runtime, send.id)
    env.flush()
    assert len(env.sink.recipients()) == after_stop
