"""The platform end to end through the real relay: a veto hook and an events receiver on
loopback, messages relayed, refused and held, the events webhook carrying exactly those, and
the seller's response time measured from the relay's own records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import SELLER_ADDRESS, Relay, message, parsed
from sqlalchemy.orm import Session, sessionmaker
from veto_kit import SECRET, Receiver

from mailveil.config import Settings
from mailveil.platform.events import events_after, push_once, webhook_client
from mailveil.platform.response_times import response_times
from mailveil.relay import codes


@pytest.fixture
def hook() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def sink() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    hook: Receiver,
    sink: Receiver,
) -> Iterator[Relay]:
    yield from kit.open_relay(
        relay_settings,
        session_factory,
        tmp_path,
        veto_url=hook.url,
        events_url=sink.url,
        platform_webhook_secret=SECRET,
        veto_timeout_seconds=1.0,
    )


def said(code: int, text: str) -> str:
    return f"{code} {text}"


def seller_sends(relay: Relay, subject: str, **headers: str) -> str:
    alias = relay.world.alias("alice", "acme")
    data = message(from_=SELLER_ADDRESS, to=alias, subject=subject, headers=headers)
    return said(*relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias,
                            token=relay.world.keys["acme"]))  # fmt: skip


def test_events_and_response_times_follow_the_relay(
    relay: Relay, hook: Receiver, sink: Receiver
) -> None:
    w = relay.world
    rcpt = w.reverse("alice", "acme")
    customer = message(from_=w.real["alice"], to=rcpt, subject="Where is my parcel?")
    assert said(*relay.send(customer, mail_from=w.real["alice"], rcpt=rcpt)) == str(codes.QUEUED)
    relay.server.flush()
    issued = parsed(relay.delivered()[0].data)["Message-ID"]
    assert seller_sends(relay, "Re: Where is my parcel?", **{"In-Reply-To": issued}) == str(
        codes.QUEUED
    )
    hook.mode = "refuse"
    assert seller_sends(relay, "[shipping] Refused one") == str(codes.VETO_REFUSED)
    hook.mode = "hold"
    assert seller_sends(relay, "[shipping] Held one") == str(codes.VETO_HELD)
    relay.server.flush()
    settings = relay.settings
    with relay.session_factory() as session, webhook_client(settings) as client:
        exported = [e["event"] for e in events_after(session)]
        pushed = push_once(session, settings, client)
        session.commit()
        times = response_times(session, w.principals["acme"].id, days=1)
    assert exported == ["relayed", "relayed", "refused", "held"]
    assert pushed.sent == 4 and pushed.error is None
    [batch] = sink.seen
    assert [e["event"] for e in batch["events"]] == exported
    assert [e["direction"] for e in batch["events"]][:2] == ["to_principal", "to_customer"]
    assert sink.bad_signatures == 0 and hook.bad_signatures == 0
    assert times.received == 1 and times.answered == 1 and times.unanswered == 0
    assert times.p50_seconds is not None and times.p50_seconds >= 0
