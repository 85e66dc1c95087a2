"""Renewing a lease or a claim after the worker's session has read, while another writer
(the relay, another worker) commits in between, on one SQLite file: the renewal waits its
turn for the write lock instead of failing with "database is locked" (which, under load,
stopped a resumed worker mid-send in the crash test)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import notify_kit as kit
import pytest
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import select, update

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.notify.audience import Entry
from mailveil.notify.claims import renew_claims
from mailveil.notify.models import Recipient, Send
from mailveil.notify.sends import create_send
from mailveil.notify.worker import _renew

CUSTOMERS = 4
WORKER = "worker-a"


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> Iterator[NotifyEnv]:
    engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
    upgrade(engine)
    tuned = kit.notify_settings(settings.with_overrides(database_url=str(engine.url)),
                                notify_stages="1", notify_min_stage_size=1)  # fmt: skip
    try:
        yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS, relay=False)
    finally:
        engine.dispose()


def _running_send(env: NotifyEnv) -> tuple[int, list[int]]:
    """A running send leased by WORKER, every recipient in its flight."""
    s = env.session()
    add_facts(s, gift_facts(list(range(1, CUSTOMERS + 1))))
    template = register(s, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    send = create_send(s, env.settings, env.runtime.ledger, template=template,
                       entries=[Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)],
                       actor="apikey:test")  # fmt: skip
    soon = utcnow() + timedelta(seconds=5)
    s.execute(update(Send).where(Send.id == send.id)
              .values(status="running", lease_owner=WORKER, lease_until=soon))  # fmt: skip
    s.execute(update(Recipient).where(Recipient.send_id == send.id)
              .values(state="delivering", claimed_by=WORKER, claim_until=soon))  # fmt: skip
    s.commit()
    ids = list(s.scalars(select(Recipient.id).where(Recipient.send_id == send.id)))
    return send.id, ids


def _read_while_another_commits(env: NotifyEnv, send_id: int) -> kit.Session:
    """The worker's session has read (as the step does before it renews); then another
    connection commits."""
    worker = env.session()
    assert worker.scalar(select(Send.status).where(Send.id == send_id)) == "running"
    other = env.session()
    other.execute(update(Send).where(Send.id == send_id).values(updated_at=utcnow()))
    other.commit()
    return worker


def test_the_lease_is_renewed_after_a_read_and_another_commit(env: NotifyEnv) -> None:
    send_id, _ = _running_send(env)
    worker = _read_while_another_commits(env, send_id)
    before = utcnow()
    _renew(worker, send_id, WORKER, 60.0)
    until = env.session().scalar(select(Send.lease_until).where(Send.id == send_id))
    assert until is not None and until >= before + timedelta(seconds=59)


def test_claims_are_renewed_after_a_read_and_another_commit(env: NotifyEnv) -> None:
    send_id, ids = _running_send(env)
    worker = _read_while_another_commits(env, send_id)
    before = utcnow()
    assert renew_claims(worker, ids, WORKER, 60.0) == set(ids)
    untils = env.session().scalars(select(Recipient.claim_until).where(Recipient.id.in_(ids)))
    assert all(u is not None and u >= before + timedelta(seconds=59) for u in untils)
