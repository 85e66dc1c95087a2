"""The events webhook against a local receiver: signed batches from the ledger, the cursor
moving only on a 2xx, backing off when the receiver errs or is down, resuming after."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session
from veto_kit import SECRET, Receiver

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.demo.harness import free_port
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import init_signing_key
from mailveil.platform.events import push_once, webhook_client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver(mode="allow").start()
    yield hook
    hook.stop()


def ledger(session: Session, settings: Settings, n: int) -> None:
    init_signing_key(settings)
    ledger = Ledger.load(settings)
    events = [
        Event(kind="message", actor="principal:1", subject=f"customer:{i}",
              alias=f"a{i}@relay.example", purpose="to_customer", ref="shipping",
              detail={"principal": "principal:1", "relay_message": f"t{i}"})
        for i in range(n)
    ]  # fmt: skip
    ledger.append(session, [Event(kind="disclosure"), *events])


def test_batches_are_signed_and_the_cursor_moves_only_on_success(
    session: Session, settings: Settings, receiver: Receiver
) -> None:
    settings = settings.with_overrides(
        events_url=receiver.url, platform_webhook_secret=SECRET, events_batch_size=2
    )
    ledger(session, settings, 3)
    now = utcnow()
    with webhook_client(settings) as client:
        first = push_once(session, settings, client, now=now)
        assert first.sent == 2 and first.error is None
        second = push_once(session, settings, client, now=now)
        assert second.sent == 1
        assert push_once(session, settings, client, now=now).sent == 0  # nothing new
        receiver.mode = "error"
        ledger(session, settings, 1)
        failed = push_once(session, settings, client, now=now)
        assert failed.sent == 0 and failed.error == "status 500"
        assert failed.cursor == second.cursor
        waiting = push_once(session, settings, client, now=now + dt.timedelta(seconds=1))
        assert waiting.waiting  # backing off: 2 s after the first failure
        receiver.mode = "allow"
        resumed = push_once(session, settings, client, now=now + dt.timedelta(seconds=3))
        assert resumed.sent == 1 and resumed.error is None
    assert receiver.bad_signatures == 0
    batches = [b["events"] for b in receiver.seen]
    sent = [e for batch in batches[:2] for e in batch] + batches[-1]
    assert [e["message"] for e in sent] == ["t0", "t1", "t2", "t0"]
    assert all(e["event"] == "relayed" and "alias" not in e for e in sent)
    # The failed batch was the same one the receiver took after.
    assert batches[-2] == batches[-1]


def test_a_receiver_that_is_down_backs_off_without_losing_events(
    session: Session, settings: Settings
) -> None:
    settings = settings.with_overrides(
        events_url=f"http://127.0.0.1:{free_port()}/events", platform_webhook_secret=SECRET
    )
    ledger(session, settings, 2)
    now = utcnow()
    with webhook_client(settings) as client:
        first = push_once(session, settings, client, now=now)
        assert first.error == "error: ConnectError" and first.cursor == -1
        second = push_once(session, settings, client, now=now + dt.timedelta(seconds=3))
        assert second.error is not None
        waits = push_once(session, settings, client, now=now + dt.timedelta(seconds=5))
        assert waits.waiting  # 4 s after the second failure
