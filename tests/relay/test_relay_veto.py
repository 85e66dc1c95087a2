"""The veto hook through the real relay and a local receiver: allow, refuse and hold as the
marketplace answers, and a hold (fail closed) when the receiver is slow, down, redirects,
errs, answers garbage or too much. What it is sent names no address and is signed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import SELLER_ADDRESS, Relay, message
from sqlalchemy.orm import Session, sessionmaker
from veto_kit import SECRET, Receiver

from mailveil.config import Settings
from mailveil.demo.harness import free_port
from mailveil.errors import Conflict
from mailveil.relay import codes, quarantine
from mailveil.relay.release import list_held, prepare_release
from mailveil.relay.veto import sign, verify

TIMEOUT = 1.0  # generous: a loaded test machine must not turn an allow into a hold
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def said(code: int, text: str) -> str:
    return f"{code} {text}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver().start()
    yield hook
    hook.stop()


def hooked(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    url: str,
) -> Iterator[Relay]:
    yield from kit.open_relay(
        relay_settings,
        session_factory,
        tmp_path,
        veto_url=url,
        platform_webhook_secret=SECRET,
        veto_timeout_seconds=TIMEOUT,
    )


@pytest.fixture
def relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    receiver: Receiver,
) -> Iterator[Relay]:
    yield from hooked(relay_settings, session_factory, tmp_path, receiver.url)


def seller_sends(relay: Relay, body: str = "Your parcel: https://track.shop.example/p/1\n") -> str:
    alias = relay.world.alias("alice", "acme")
    msg = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Parcel", body=body)
    code, text = relay.send(
        msg, mail_from=SELLER_ADDRESS, rcpt=alias, token=relay.world.keys["acme"]
    )
    return said(code, text)


def test_signature_round_trip_and_tamper() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body)
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify("other", body, header)
    assert not verify(SECRET, body, sign(SECRET, body, now=int(time.time()) - 3600))
    assert not verify(SECRET, body, "garbage")


def test_allow_delivers_and_the_hook_sees_metadata_without_addresses(
    relay: Relay, receiver: Receiver
) -> None:
    assert seller_sends(relay) == str(codes.QUEUED)
    assert len(relay.delivered()) == 1
    [seen] = receiver.seen
    assert receiver.bad_signatures == 0
    w = relay.world
    assert seen["principal"] == {"id": w.principals["acme"].id, "kind": "seller",
                                 "external_id": "acme"}  # fmt: skip
    assert seen["customer"] == {"id": w.customers["alice"].id, "external_id": "cust-alice"}
    assert seen["reason"] == "shipping"
    assert seen["order"]["status"] == "shipped" and seen["order"]["external_id"] == "ord-alice-acme"
    assert seen["links"] == {"count": 1, "hosts": ["track.shop.example"]}
    assert seen["attachments"]["count"] == 0 and seen["size"] > 0
    text = json.dumps(seen).lower()
    for address in [*w.customer_addresses, *w.principal_addresses]:
        assert address.lower() not in text
    assert "@" not in text  # not even the aliases
    assert relay.ledger("message")[0]["detail"]["veto"] == "allow"


def test_refuse_is_a_recorded_550(relay: Relay, receiver: Receiver) -> None:
    receiver.mode = "refuse"
    assert seller_sends(relay) == str(codes.VETO_REFUSED)
    assert relay.delivered() == []
    [entry] = relay.ledger("message_refused")
    assert entry["detail"]["stage"] == "veto"
    assert "test refuse" in entry["detail"]["why"]


def test_hold_quarantines_and_records(relay: Relay, receiver: Receiver) -> None:
    receiver.mode = "hold"
    assert seller_sends(relay) == str(codes.VETO_HELD)
    assert relay.delivered() == []
    [entry] = relay.ledger("message_held")
    assert entry["detail"]["by"] == "veto" and entry["detail"]["why"] == "test hold"
    held = quarantine.read(relay.settings.data_dir, entry["detail"]["sha256"])
    assert b"Parcel" in held
    with relay.session_factory() as session:  # the operator sees it, and why, and can delete
        [listed] = list_held(session, relay.settings)
        assert listed.kind == "message_held"
        assert listed.view()["principal"] == f"principal:{relay.world.principals['acme'].id}"
        with pytest.raises(Conflict, match="veto hook held"):
            prepare_release(session, relay.server.ctx, listed.held.sha256, actor="test")


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("slow", "timeout"),
        ("garbage", "answer not understood"),
        ("redirect", "status 302"),
        ("error", "status 500"),
        ("huge", "answer too long"),
        ("reset", "error: RemoteProtocolError"),
    ],
)
def test_a_wrong_or_slow_receiver_holds_the_message(
    relay: Relay, receiver: Receiver, mode: str, why: str
) -> None:
    receiver.mode = mode
    receiver.slow_seconds = 3 * TIMEOUT
    assert seller_sends(relay) == str(codes.VETO_HELD)
    assert relay.delivered() == []
    [entry] = relay.ledger("message_held")
    assert entry["detail"]["why"] == why  # "timeout": the relay did not wait for the answer


def test_a_receiver_that_is_down_holds_the_message(
    relay_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/veto"  # nothing listens there
    for relay in hooked(relay_settings, session_factory, tmp_path, url):
        assert seller_sends(relay) == str(codes.VETO_HELD)
        [entry] = relay.ledger("message_held")
        assert entry["detail"]["why"] == "error: ConnectError"
        assert relay.delivered() == []


def test_attachments_are_summarised_by_type_and_size(relay: Relay, receiver: Receiver) -> None:
    from email.message import EmailMessage
    from email.policy import SMTP

    w = relay.world
    alias = w.alias("alice", "acme")
    msg = EmailMessage()
    msg["From"] = SELLER_ADDRESS
    msg["To"] = alias
    msg["Subject"] = "[shipping] Invoice"
    msg.set_content("Invoice attached.\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    code, text = relay.send(msg.as_bytes(policy=SMTP), mail_from=SELLER_ADDRESS, rcpt=alias,
                            token=w.keys["acme"])  # fmt: skip
    assert said(code, text) == str(codes.QUEUED)
    [seen] = receiver.seen
    assert seen["attachments"] == {
        "count": 1,
        "bytes": len(PDF),
        "items": [{"type": "application/pdf", "size": len(PDF)}],
    }
    assert "invoice.pdf" not in json.dumps(seen)
