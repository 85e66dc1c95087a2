"""End to end over real sockets: principals and customers through the relay into a sink
smarthost, both directions, and what the sender is told when the smarthost fails.

Every test's relay fixture checks the privacy invariant on every delivered message when the
test ends (``relay_server_kit.check_privacy``) and that no real address was logged.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import (
    SELLER_ADDRESS,
    SELLER_OTHER_ADDRESS,
    Relay,
    message,
    parsed,
    verify_dkim,
)
from relay_testkit import RawClient
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.principals import update_principal
from mailveil.db.base import utcnow
from mailveil.relay import codes
from mailveil.relay.dkim import DkimSigner
from mailveil.relay.messages import verify_bounce_local
from mailveil.relay.models import RelayBounceMark
from smtp_kit import Received


def said(code: int, text: str) -> str:
    return f"{code} {text}"


def seller_message(relay: Relay, customer: str = "alice", **kw: str) -> tuple[str, bytes]:
    alias = relay.world.alias(customer, "acme")
    kw.setdefault("subject", "[shipping] Your parcel")
    kw.setdefault("from_", f"Acme Books <{SELLER_ADDRESS}>")
    return alias, message(to=alias, **kw)


def check_verp(relay: Relay, got: Received) -> str:
    local, _, domain = got.mail_from.partition("@")
    assert domain == relay.settings.relay_domain
    token = verify_bounce_local(relay.verp_key, local)
    assert token is not None
    return token


# ------------------------------------------------------------------ principal -> customer


def test_authenticated_seller_reaches_customer_rewritten_signed_and_ledgered(relay: Relay) -> None:
    w = relay.world
    alias, data = seller_message(
        relay,
        body=f"Your parcel left today. Questions? {SELLER_OTHER_ADDRESS} or {SELLER_ADDRESS}.\n",
        headers={
            "Reply-To": SELLER_OTHER_ADDRESS,
            "X-Originating-IP": "[192.0.2.7]",
            "Disposition-Notification-To": SELLER_ADDRESS,
        },
    )
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.QUEUED)
    [got] = relay.delivered()
    assert got.rcpt_tos == (w.real["alice"],)
    token = check_verp(relay, got)
    out = parsed(got.data)
    sender = out["From"].addresses[0]
    assert sender.addr_spec == w.reverse("alice", "acme")
    assert sender.display_name == "Acme Books"
    assert out["To"] == alias
    assert out["Reply-To"] is None and out["Disposition-Notification-To"] is None
    assert out["X-Originating-IP"] is None
    assert out["Message-ID"].endswith(f"@{relay.settings.relay_domain}>")
    assert w.reverse("alice", "acme") in out.get_content()
    assert verify_dkim(got.data, DkimSigner.load(relay.settings)) == [True, True]
    assert got.data.count(b"\r\n") == got.data.count(b"\n")  # canonical CRLF

    [entry] = relay.ledger("message")
    assert entry["actor"] == f"principal:{w.principals['acme'].id}"
    assert entry["subject"] == f"customer:{w.customers['alice'].id}"
    assert entry["alias"] == alias
    assert entry["purpose"] == "to_customer"
    assert entry["ref"] == "shipping"
    assert entry["detail"]["relay_message"] == token
    assert entry["detail"]["size"] == len(got.data)
    assert entry["detail"]["sha256"] == hashlib.sha256(got.data).hexdigest()
    [row] = relay.relay_messages()
    assert (row.status, row.token, row.direction) == ("delivered", token, "to_customer")
    assert row.message_id == out["Message-ID"]


def test_seller_sending_from_its_own_server_is_recognised_by_spf(relay: Relay) -> None:
    alias, data = seller_message(relay)
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias)
    assert said(code, text) == str(codes.QUEUED)
    assert len(relay.delivered()) == 1
    assert relay.ledger("message")[0]["actor"] == f"principal:{relay.world.principals['acme'].id}"


def test_employee_with_an_open_case_reaches_the_customer(relay: Relay) -> None:
    w = relay.world
    alias = w.alias("alice", "agent")
    data = message(from_="Support <agent@support.example>", to=alias, subject="[support] Case")
    code, text = relay.send(
        data, mail_from="agent@support.example", rcpt=alias, token=w.keys["agent"]
    )
    assert said(code, text) == str(codes.QUEUED)
    [got] = relay.delivered()
    assert parsed(got.data)["From"].addresses[0].addr_spec == w.reverse("alice", "agent")
    assert b"agent@support.example" not in got.data


# ------------------------------------------------------------------ customer -> principal


def test_customer_reply_reaches_the_seller_with_every_trace_of_the_customer_redacted(
    relay: Relay,
) -> None:
    w = relay.world
    real = w.real["alice"]
    reverse = w.reverse("alice", "acme")
    body = (
        "Thanks! The box was damaged though.\n\n"
        f"Alice <{real}>\n\n"
        f"> On Monday Acme Books <{reverse}> wrote:\n> Your parcel left today.\n"
    )
    data = message(
        from_=f'"Alice ({real})" <{real}>',
        to=reverse,
        subject=f"Re: [shipping] Your parcel (from {real.upper()})",
        body=body,
        headers={
            "Reply-To": real,
            "Return-Path": f"<{real}>",
            "X-Originating-IP": "[198.51.100.23]",
            "User-Agent": "Thunderbird 128",
        },
    )
    code, text = relay.send(data, mail_from=real.lower(), rcpt=reverse)
    assert said(code, text) == str(codes.QUEUED)
    [got] = relay.delivered()
    assert got.rcpt_tos == (SELLER_ADDRESS,)
    check_verp(relay, got)
    out = parsed(got.data)
    assert out["From"].addresses[0].addr_spec == w.alias("alice", "acme")
    for name in ("Reply-To", "Return-Path", "X-Originating-IP", "User-Agent"):
        assert out[name] is None
    assert w.alias("alice", "acme") in out.get_content()
    assert verify_dkim(got.data, DkimSigner.load(relay.settings)) == [True, True]
    [entry] = relay.ledger("message")
    assert entry["actor"] == f"customer:{w.customers['alice'].id}"
    assert entry["purpose"] == "to_principal"
    assert entry["alias"] == w.alias("alice", "acme")


def test_customer_whose_provider_signs_with_dkim_passes_without_spf(relay: Relay) -> None:
    """SPF fails for erin's domain here, but her provider's DKIM signature (aligned with From)
    authenticates her: DMARC-style alignment through DKIM."""
    w = relay.world
    real, reverse = w.real["erin"], w.reverse("erin", "acme")
    data = kit.customer_dkim_sign(message(from_=f"Erin <{real}>", to=reverse, subject="Hi"))
    code, text = relay.send(data, mail_from=real, rcpt=reverse)
    assert said(code, text) == str(codes.QUEUED)
    [got] = relay.delivered()
    assert parsed(got.data)["From"].addresses[0].addr_spec == w.alias("erin", "acme")
    assert b"dkim-mailbox.example" not in got.data.lower()  # her signature is not passed on
    # Without the signature the same message is refused: SPF alone fails.
    unsigned = message(from_=f"Erin <{real}>", to=reverse, subject="Hi")
    code, text = relay.send(unsigned, mail_from=real, rcpt=reverse)
    assert said(code, text) == str(codes.SENDER_NOT_AUTHENTICATED)


def test_customer_writing_from_another_address_is_refused_at_rcpt(relay: Relay) -> None:
    w = relay.world
    reverse = w.reverse("alice", "acme")
    data = message(from_=w.real["alice"], to=reverse)
    code, text = relay.send(data, mail_from="someone.else@private-mailbox.example", rcpt=reverse)
    assert said(code, text) == str(codes.NOT_AUTHORIZED)
    assert relay.delivered() == []
    [entry] = relay.ledger("message_refused")
    assert entry["detail"]["stage"] == "rcpt"
    assert entry["detail"]["reply"] == "550 5.7.1"


def test_spoofed_from_with_the_customers_envelope_is_refused_at_data(relay: Relay) -> None:
    w = relay.world
    reverse = w.reverse("alice", "acme")
    data = message(from_="Boss <ceo@stranger.example>", to=reverse)
    code, text = relay.send(data, mail_from=w.real["alice"], rcpt=reverse)
    assert said(code, text) == str(codes.SENDER_NOT_AUTHENTICATED)
    assert relay.delivered() == []
    [entry] = relay.ledger("message_refused")
    assert entry["detail"]["stage"] == "data"


def test_customer_domain_whose_spf_fails_cannot_be_spoofed_into_the_seller(relay: Relay) -> None:
    w = relay.world
    reverse = w.reverse("dave", "acme")
    data = message(from_=w.real["dave"], to=reverse)
    code, text = relay.send(data, mail_from=w.real["dave"], rcpt=reverse)
    assert said(code, text) == str(codes.SENDER_NOT_AUTHENTICATED)
    assert relay.delivered() == []


def test_principal_without_a_mailbox_cannot_receive_replies(relay: Relay) -> None:
    w = relay.world
    with relay.session_factory() as session:
        update_principal(
            session,
            w.principals["agent"].id,
            attributes={"team": "support", "role": "agent", "region": "eu"},
        )
        session.commit()
    reverse = w.reverse("alice", "agent")
    code, text = relay.send(
        message(from_=w.real["alice"], to=reverse), mail_from=w.real["alice"], rcpt=reverse
    )
    assert said(code, text) == str(codes.NO_DELIVERY_ADDRESS)
    assert relay.ledger("message_refused")[0]["detail"]["reply"] == "550 5.1.1"


# ------------------------------------------------------------------ the smarthost fails


def test_smarthost_down_means_451_and_nothing_recorded_as_delivered(relay: Relay) -> None:
    relay.sink.stop()
    alias, data = seller_message(relay)
    code, text = relay.send(
        data, mail_from=SELLER_ADDRESS, rcpt=alias, token=relay.world.keys["acme"]
    )
    assert said(code, text) == str(codes.SMARTHOST_UNREACHABLE)
    [row] = relay.relay_messages()
    assert row.status == "deferred"
    kinds = [e["kind"] for e in relay.ledger() if e["kind"].startswith("message")]
    assert kinds == ["message", "message_deferred"]
    assert relay.ledger("message_deferred")[0]["detail"]["relay_message"] == row.token


def test_smarthost_5xx_becomes_our_5xx_without_its_text(relay: Relay) -> None:
    w = relay.world
    relay.sink.reply = f"550 5.1.1 <{w.real['alice']}>: Recipient address rejected: unknown"
    alias, data = seller_message(relay)
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.NEXT_HOP_NO_MAILBOX)
    assert w.real["alice"].lower() not in text.lower()
    [row] = relay.relay_messages()
    assert (row.status, row.status_code) == ("rejected", "550")
    assert relay.ledger("message_rejected")[0]["detail"]["reply"] == "550 5.1.1"


def test_smarthost_4xx_and_refused_recipient_map_to_our_replies(relay: Relay) -> None:
    w = relay.world
    relay.sink.reply = "451 4.3.0 Try later"
    alias, data = seller_message(relay)
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.NEXT_HOP_DEFERRED)
    relay.sink.reply = None
    relay.sink.refuse_rcpt = lambda address: "554 5.7.1 <x@y>: Relay access denied"
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.NEXT_HOP_POLICY)
    relay.sink.refuse_rcpt = None
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.QUEUED)
    # The second send is the deferred message's retry (same envelope, same bytes): it takes
    # over its row. A message already rejected is over, so the third is a new message.
    rows = relay.relay_messages()
    assert [(r.status, r.attempts) for r in rows] == [("rejected", 2), ("delivered", 1)]
    kinds = [e["kind"] for e in relay.ledger() if e["kind"].startswith("message")]
    assert kinds == [
        "message", "message_deferred", "message_rejected", "message", "message_delivered",
    ]  # fmt: skip
    assert relay.ledger("message_rejected")[0]["detail"]["relay_message"] == rows[0].token


def test_slow_smarthost_gets_a_timeout_and_the_sender_a_451(relay: Relay) -> None:
    relay.sink.on_message = lambda item: time.sleep(6)  # past smarthost_timeout (5 s)
    alias, data = seller_message(relay)
    code, text = relay.send(
        data, mail_from=SELLER_ADDRESS, rcpt=alias, token=relay.world.keys["acme"]
    )
    assert said(code, text) == str(codes.SMARTHOST_UNREACHABLE)
    relay.sink.on_message = None
    assert relay.relay_messages()[0].status == "deferred"


def test_pooled_connections_carry_many_messages(relay: Relay) -> None:
    w = relay.world
    alias, data = seller_message(relay)
    with relay.client(token=w.keys["acme"]) as client:
        for _ in range(5):
            assert kit.transaction(client, SELLER_ADDRESS, alias, data)[0] == 250
    assert len(relay.delivered()) == 5
    assert relay.server.server is not None
    assert relay.server.server.smarthost.sent == 5
    assert len({m.mail_from for m in relay.delivered()}) == 5  # one VERP token per message


def test_killed_mid_message_loses_nothing(relay: Relay) -> None:
    """The sender never saw 250, so it still has the message; nothing half-done remains."""
    w = relay.world
    alias, data = seller_message(relay)
    client = RawClient("127.0.0.1", relay.port)
    try:
        assert client.reply()[0] == 220
        assert client.command("EHLO client.example")[0] == 250
        assert client.command(f"MAIL FROM:<{SELLER_ADDRESS}>")[0] == 250
        assert client.command(f"RCPT TO:<{alias}>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(data[: len(data) // 2])
        relay.server.stop()
        assert b"250" not in client.rest()
    finally:
        client.close()
    assert relay.delivered() == []
    assert relay.ledger("message") == []
    assert relay.relay_messages() == []
    assert w.keys["acme"]


@pytest.fixture
def tls_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> Iterator[Relay]:
    yield from kit.open_relay(
        relay_settings.with_overrides(relay_allow_plain_auth_on_loopback=False),
        session_factory,
        tmp_path,
        tls=True,
    )


def test_auth_plain_over_starttls_with_a_self_signed_certificate(tls_relay: Relay) -> None:
    w = tls_relay.world
    alias, data = seller_message(tls_relay)
    with tls_relay.client() as plain:
        assert plain.has_extn("starttls")
        assert not plain.has_extn("auth")  # not before TLS
    code, text = tls_relay.send(
        data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"], tls=True
    )
    assert said(code, text) == str(codes.QUEUED)
    assert len(tls_relay.delivered()) == 1


def test_customer_reply_reaches_the_employee_at_their_delivery_address(relay: Relay) -> None:
    w = relay.world
    real = w.real["alice"]
    reverse = w.reverse("alice", "agent")
    data = message(
        from_=f"Alice <{real}>",
        to=reverse,
        subject="Re: your case",
        body=f"Still waiting, write to me at {real}.\n",
    )
    code, text = relay.send(data, mail_from=real, rcpt=reverse)
    assert said(code, text) == str(codes.QUEUED)
    [got] = relay.delivered()
    assert got.rcpt_tos == (kit.AGENT_ADDRESS,)
    out = parsed(got.data)
    assert out["From"].addresses[0].addr_spec == w.alias("alice", "agent")
    assert real.lower() not in got.data.decode("latin-1").lower()


def test_an_address_marked_bouncing_is_refused_at_rcpt(relay: Relay) -> None:
    w = relay.world
    with relay.session_factory() as session:
        session.add(
            RelayBounceMark(customer_id=w.customers["alice"].id, hard_bounces=3, marked_at=utcnow())
        )
        session.commit()
    alias, data = seller_message(relay)
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.RECIPIENT_BOUNCING)
    assert relay.delivered() == []
    # Another customer of the same seller is not affected.
    alias, data = seller_message(relay, customer="bob", subject="[shipping] Parcel")
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) != str(codes.RECIPIENT_BOUNCING)
