"""The relay's SMTP protocol over real sockets: AUTH, recipients, strangers, revoked aliases,
bounce addresses, bad input and hostile clients. Each gets its specific reply and the server
keeps serving (every test that breaks something sends a good message afterwards).
"""

from __future__ import annotations

import base64
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import (
    SELLER_ADDRESS,
    STRANGER_ADDRESS,
    Relay,
    message,
    transaction,
)
from relay_testkit import VARIANTS, RawClient
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.aliases import revoke_alias
from mailveil.contacts.principals import update_principal
from mailveil.relay import codes
from mailveil.relay.messages import verp_address
from mailveil.relay.server import enhance
from mailveil.relay.smuggling import to_wire


def said(code: int, text: str) -> str:
    return f"{code} {text}"


def good_message(relay: Relay) -> tuple[str, bytes]:
    alias = relay.world.alias("alice", "acme")
    return alias, message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Parcel")


def still_serves(relay: Relay) -> None:
    alias, data = good_message(relay)
    before = len(relay.delivered())
    code, text = relay.send(
        data, mail_from=SELLER_ADDRESS, rcpt=alias, token=relay.world.keys["acme"]
    )
    assert said(code, text) == str(codes.QUEUED)
    assert len(relay.delivered()) == before + 1


def raw(relay: Relay) -> RawClient:
    client = RawClient("127.0.0.1", relay.port)
    assert client.reply()[0] == 220
    return client


def plain_auth(token: str) -> str:
    return base64.b64encode(f"\0anything\0{token}".encode()).decode()


# ------------------------------------------------------------------------- greeting, AUTH


def test_ehlo_advertises_size_enhanced_codes_and_auth_on_allowed_loopback(relay: Relay) -> None:
    with relay.client() as client:
        assert client.has_extn("enhancedstatuscodes")
        assert int(client.esmtp_features["size"]) == relay.settings.relay_max_message_bytes
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        assert not client.has_extn("starttls")
        assert not client.has_extn("help")


def test_auth_login_and_bad_keys(relay: Relay) -> None:
    w = relay.world
    with relay.client() as client:
        client.user, client.password = "anything", w.keys["acme"]
        code, text = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert said(code, text.decode()) == str(codes.AUTH_SUCCEEDED)
    for token in ("mvk_nope_nope", w.keys["admin"], "not a key"):
        with relay.client() as client, pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.login("anything", token)
        assert said(err.value.smtp_code, err.value.smtp_error.decode()) == str(codes.AUTH_INVALID)


def test_three_failed_logins_close_the_connection(relay: Relay) -> None:
    client = raw(relay)
    client.command("EHLO client.example")
    for _ in range(2):
        assert said(*client.command(f"AUTH PLAIN {plain_auth('mvk_x_y')}")) == str(
            codes.AUTH_INVALID
        )
    assert said(*client.command(f"AUTH PLAIN {plain_auth('mvk_x_y')}")) == str(
        codes.TOO_MANY_AUTH_FAILURES
    )
    assert client.rest() == b""
    client.close()
    still_serves(relay)


@pytest.fixture
def strict_relay(
    relay_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[Relay]:
    yield from kit.open_relay(
        relay_settings.with_overrides(relay_allow_plain_auth_on_loopback=False),
        session_factory,
        tmp_path,
    )


def test_no_auth_without_tls_unless_the_operator_allows_loopback(strict_relay: Relay) -> None:
    client = raw(strict_relay)
    client.send(b"EHLO client.example\r\n")
    lines = [client._line()]
    while lines[-1][3:4] == b"-":
        lines.append(client._line())
    assert not any(line[4:].startswith(b"AUTH") for line in lines)
    token = strict_relay.world.keys["acme"]
    assert said(*client.command(f"AUTH PLAIN {plain_auth(token)}")) == str(
        codes.ENCRYPTION_REQUIRED
    )
    client.close()


# ------------------------------------------------------------------------------ recipients


def test_unknown_alias_foreign_domain_and_second_recipient(relay: Relay) -> None:
    w = relay.world
    domain = relay.settings.relay_domain
    with relay.client(token=w.keys["acme"]) as client:
        client.mail(SELLER_ADDRESS)
        assert said(*_decoded(client.rcpt(f"nobody@{domain}"))) == str(codes.BAD_DESTINATION)
        assert said(*_decoded(client.rcpt("victim@elsewhere.example"))) == str(codes.RELAY_DENIED)
        assert said(*_decoded(client.rcpt(w.alias("alice", "acme")))) == str(codes.RECIPIENT_OK)
        assert said(*_decoded(client.rcpt(w.alias("bob", "acme")))) == str(
            codes.TOO_MANY_RECIPIENTS
        )
        code, _ = client.data(message(from_=SELLER_ADDRESS, to="x", subject="[shipping] a"))
        assert code == 250
    [got] = relay.delivered()
    assert got.rcpt_tos == (w.real["alice"],)  # only the one recipient


def _decoded(reply: tuple[int, bytes]) -> tuple[int, str]:
    return reply[0], reply[1].decode()


def test_authenticated_stranger_is_refused_at_rcpt_and_signalled(refusing_relay: Relay) -> None:
    relay = refusing_relay  # today's behaviour; other modes: test_relay_detection
    w = relay.world
    alias = w.alias("alice", "acme")
    code, text = relay.send(
        message(from_="x@rival-shop.example", to=alias),
        mail_from="owner@rival-shop.example",
        rcpt=alias,
        token=w.keys["rival"],
    )
    assert said(code, text) == str(codes.NOT_AUTHORIZED)
    assert relay.delivered() == []
    [signal] = relay.ledger("stranger_at_alias")
    assert signal["alias"] == alias
    assert signal["subject"] == f"customer:{w.customers['alice'].id}"
    assert signal["actor"] == f"principal:{w.principals['rival'].id}"
    detail = signal["detail"]
    assert detail["authenticated_principal"] == f"principal:{w.principals['rival'].id}"
    assert detail["principal"] == f"principal:{w.principals['acme'].id}"
    assert detail["envelope_from"] == "owner@rival-shop.example"
    assert (detail["client_ip"], detail["helo"]) == ("127.0.0.1", kit.CLIENT_HELO)
    assert detail["action"] == "refuse"


def test_unauthenticated_stranger_is_refused_at_data_with_its_identity(
    refusing_relay: Relay,
) -> None:
    relay = refusing_relay  # today's behaviour; other modes: test_relay_detection
    alias = relay.world.alias("alice", "acme")
    data = message(from_=f"Deals <{STRANGER_ADDRESS}>", to=alias, subject="Catalogue")
    code, text = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias)
    assert said(code, text) == str(codes.NOT_AUTHORIZED)
    [signal] = relay.ledger("stranger_at_alias")
    detail = signal["detail"]
    assert signal["actor"] is None
    assert detail["envelope_from"] == STRANGER_ADDRESS
    assert detail["header_from"] == STRANGER_ADDRESS
    assert (detail["spf"], detail["from_domain"]) == ("pass", "stranger.example")
    assert detail["dkim"] == []
    assert detail["action"] == "refuse"
    assert relay.delivered() == []


def test_seller_address_without_spf_pass_is_a_stranger(refusing_relay: Relay) -> None:
    """From a seller's address but not from its servers (SPF fails): not the seller."""
    relay = refusing_relay  # today's behaviour; other modes: test_relay_detection
    alias = relay.world.alias("alice", "acme")
    data = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Parcel")
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, source="127.0.0.2")
    assert said(code, text) == str(codes.NOT_AUTHORIZED)
    assert relay.ledger("stranger_at_alias")[0]["detail"]["spf"] == "fail"


def test_customer_writing_to_an_alias_is_recorded_by_id_not_address(refusing_relay: Relay) -> None:
    relay = refusing_relay  # today's behaviour; other modes: test_relay_detection
    w = relay.world
    alias = w.alias("alice", "acme")
    code, text = relay.send(
        message(from_=w.real["carol"], to=alias), mail_from=w.real["carol"], rcpt=alias
    )
    assert said(code, text) == str(codes.NOT_AUTHORIZED)
    detail = relay.ledger("stranger_at_alias")[0]["detail"]
    assert detail["envelope_from"] == f"customer:{w.customers['carol'].id}"
    assert detail["header_from"] == f"customer:{w.customers['carol'].id}"


def _revoke(relay: Relay, customer: str, principal: str) -> None:
    with relay.session_factory() as session:
        revoke_alias(
            session,
            relay.runtime.ledger,
            address=relay.world.alias(customer, principal),
            reason="leaked",
            actor="test",
        )
        session.commit()


def test_revoked_alias_refuses_its_principal_and_still_signals_strangers(
    refusing_relay: Relay,
) -> None:
    relay = refusing_relay  # today's behaviour; other modes: test_relay_detection
    w = relay.world
    _revoke(relay, "alice", "acme")
    alias = w.alias("alice", "acme")
    data = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Parcel")
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.MAILBOX_DISABLED)
    assert relay.ledger("message_refused")[0]["detail"]["reply"] == "550 5.2.1"
    code, text = relay.send(
        message(from_=STRANGER_ADDRESS, to=alias), mail_from=STRANGER_ADDRESS, rcpt=alias
    )
    assert said(code, text) == str(codes.MAILBOX_DISABLED)
    [signal] = relay.ledger("stranger_at_alias")
    assert signal["detail"]["revoked"] is True
    code, text = relay.send(
        message(from_=w.real["alice"], to=w.reverse("alice", "acme")),
        mail_from=w.real["alice"],
        rcpt=w.reverse("alice", "acme"),
    )
    assert said(code, text) == str(codes.MAILBOX_DISABLED)
    assert relay.delivered() == []


def test_suspended_seller_is_refused_at_rcpt(relay: Relay) -> None:
    w = relay.world
    with relay.session_factory() as session:
        update_principal(session, w.principals["acme"].id, status="suspended")
        session.commit()
    alias, data = good_message(relay)
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])
    assert said(code, text) == str(codes.SENDER_SUSPENDED)


# ------------------------------------------------------------------------ bounce addresses


def test_bounce_addresses_need_a_valid_tag(relay: Relay) -> None:
    domain = relay.settings.relay_domain
    forged = "bounce+" + "a" * 32
    with relay.client() as client:
        client.mail("<>")
        assert said(*_decoded(client.rcpt(f"{forged}@{domain}"))) == str(codes.BAD_DESTINATION)


def test_valid_bounce_address_reaches_the_bounce_processor(relay: Relay) -> None:
    server = relay.server.server
    assert server is not None
    seen: list[tuple[str, bytes]] = []

    async def record(token: str, data: bytes) -> codes.Reply:
        seen.append((token, data))
        return codes.QUEUED

    server.handler.bounce = record
    address = verp_address(relay.verp_key, "abcdefghijklmnop", relay.settings.relay_domain)
    report = b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered\r\n\r\nGone.\r\n"
    with relay.client() as client:
        assert transaction(client, "<>", address, report)[0] == 250
    assert seen == [("abcdefghijklmnop", report)]


# ------------------------------------------------------------------------------- bad input


def _send_raw(relay: Relay, data: bytes) -> str:
    """DATA with exact bytes (no client fix-ups) to a known alias, as its authenticated seller."""
    client = raw(relay)
    client.command("EHLO client.example")
    assert client.command(f"AUTH PLAIN {plain_auth(relay.world.keys['acme'])}")[0] == 235
    assert client.command(f"MAIL FROM:<{SELLER_ADDRESS}>")[0] == 250
    assert client.command(f"RCPT TO:<{relay.world.alias('alice', 'acme')}>")[0] == 250
    assert client.command("DATA")[0] == 354
    client.send(data)
    reply = said(*client.reply())
    client.command("QUIT")
    client.close()
    return reply


def _headers(extra: bytes = b"") -> bytes:
    return (
        f"From: {SELLER_ADDRESS}\r\nTo: x@relay.example\r\nSubject: [shipping] t\r\n".encode()
        + extra
    )


BAD_INPUT = {
    "missing From": (b"To: a@b.example\r\nSubject: [shipping] x\r\n\r\nhi\r\n", codes.MISSING_FROM),
    "two From": (
        _headers(f"From: {SELLER_ADDRESS}\r\n".encode()) + b"\r\nhi\r\n",
        codes.DUPLICATE_FROM,
    ),
    "8-bit header not UTF-8": (
        _headers(b"X-Note: caf\xe9\r\n") + b"\r\nhi\r\n",
        codes.HEADER_NOT_UTF8,
    ),
    "thousands of headers": (
        _headers(b"".join(b"X-H%d: v\r\n" % i for i in range(3000))) + b"\r\nhi\r\n",
        codes.TOO_MANY_HEADERS,
    ),
    "malformed MIME": (
        _headers(b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n")
        + b"\r\n--x\r\n\r\nhi\r\n",
        codes.BAD_CONTENT,
    ),
    "header injection in display name": (
        _headers()
        .replace(b"From: ", b"From: =?utf-8?q?Bob=0D=0ABcc=3A_x=40y=2Eexample?= <", 1)
        .replace(b".example\r\nTo", b".example>\r\nTo", 1)
        + b"\r\nhi\r\n",
        codes.HEADER_INJECTION,
    ),
    # Python's generator ends a line at a vertical tab: out of the relay it would be two
    # fields, the second one the sender's (found by the rewriting fuzzer).
    "vertical tab splitting a header": (
        _headers(b"X-Note: hi\x0bBcc: victim@example.org\r\n") + b"\r\nhi\r\n",
        codes.HEADER_INJECTION,
    ),
    "form feed in an attachment's header": (
        _headers(b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n")
        + b"\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment;\x0c"
        + b"Bcc: victim@example.org\r\n\r\nhi\r\n--b--\r\n",
        codes.HEADER_INJECTION,
    ),
    # 999 characters: under aiosmtpd's line limit, over RFC 5322's 998.
    "header line too long": (
        _headers(b"X-Long: " + b"a" * 991 + b"\r\n") + b"\r\nhi\r\n",
        codes.HEADER_LINE_TOO_LONG,
    ),
}


def _nested(depth: int) -> bytes:
    body = b"Subject: inner\r\n\r\nhi\r\n"
    for _ in range(depth):
        body = b"Content-Type: message/rfc822\r\n\r\n" + body
    return _headers(b"MIME-Version: 1.0\r\n") + body


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_gets_its_reply_and_the_server_stays_up(relay: Relay, case: str) -> None:
    data, reply = BAD_INPUT[case]
    assert _send_raw(relay, to_wire(data)) == str(reply)
    [entry] = relay.ledger("message_refused")
    assert entry["detail"]["reply"] == f"{reply.code} {reply.enhanced}"
    still_serves(relay)


def test_deep_message_nesting_is_refused(relay: Relay) -> None:
    assert _send_raw(relay, to_wire(_nested(40))) == str(codes.MIME_TOO_DEEP)
    still_serves(relay)


def test_bare_line_endings_are_refused_and_recorded(relay: Relay) -> None:
    data = _headers() + b"\r\nline one\nline two\r\n.\r\n"
    assert _send_raw(relay, data) == str(codes.BARE_LF)
    assert relay.ledger("message_refused")[0]["detail"]["reply"] == "550 5.5.2"
    still_serves(relay)


def test_long_body_line_is_refused(relay: Relay) -> None:
    data = _headers() + b"\r\n" + b"x" * 2000 + b"\r\n.\r\n"
    assert _send_raw(relay, data) == str(codes.LINE_TOO_LONG)
    still_serves(relay)


@pytest.fixture
def small_relay(
    relay_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[Relay]:
    yield from kit.open_relay(
        relay_settings.with_overrides(relay_max_message_bytes=20_000, relay_timeout_seconds=1.0),
        session_factory,
        tmp_path,
        relay_max_connections=3,
    )


def test_oversized_messages_are_refused_while_read(small_relay: Relay) -> None:
    alias = small_relay.world.alias("alice", "acme")
    with small_relay.client(token=small_relay.world.keys["acme"]) as client:
        code, text = client.mail(SELLER_ADDRESS, options=["SIZE=50000"])
        assert said(code, text.decode()) == str(codes.MESSAGE_TOO_BIG)
        big = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] x", body="y" * 60 + "\n")
        big += b"z" * 70 + b"\r\n"
        big = big.replace(b"\r\n\r\n", b"\r\n\r\n" + (b"a" * 70 + b"\r\n") * 400, 1)
        assert transaction(client, SELLER_ADDRESS, alias, big) == (
            codes.MESSAGE_TOO_BIG.code,
            codes.MESSAGE_TOO_BIG.text,
        )
    assert small_relay.delivered() == []


def test_slow_clients_are_cut_off_and_connections_are_capped(small_relay: Relay) -> None:
    idle = raw(small_relay)
    time.sleep(1.6)
    # Told why, then closed by the server after relay_timeout_seconds.
    assert idle.rest() == f"{codes.CONNECTION_TIMEOUT}\r\n".encode()
    idle.close()
    # A client trickling its DATA (each line inside the timeout, the whole too slow for it)
    # gets the same reply in the middle of the transfer, and nothing is delivered.
    trickle = raw(small_relay)
    alias = small_relay.world.alias("alice", "acme")
    assert trickle.command("EHLO trickle.example")[0] == 250
    assert trickle.command(f"AUTH PLAIN {plain_auth(small_relay.world.keys['acme'])}")[0] == 235
    assert trickle.command(f"MAIL FROM:<{SELLER_ADDRESS}>")[0] == 250
    assert trickle.command(f"RCPT TO:<{alias}>")[0] == 250
    assert trickle.command("DATA")[0] == 354
    sent_for = 0.0
    with pytest.raises(OSError):  # the server closes while the client still sends
        while sent_for < 5.0:
            trickle.send(b"Subject: [shipping] slow\r\n")
            time.sleep(0.3)
            sent_for += 0.3
    assert f"{codes.CONNECTION_TIMEOUT}\r\n".encode() in trickle.buffer + trickle.rest()
    trickle.close()
    assert small_relay.delivered() == []
    held = [raw(small_relay) for _ in range(3)]
    extra = socket.create_connection(("127.0.0.1", small_relay.port), timeout=5)
    assert extra.recv(1024).startswith(str(codes.TOO_MANY_CONNECTIONS).encode())
    extra.close()
    for client in held:
        client.close()
    time.sleep(0.2)
    alias = small_relay.world.alias("alice", "acme")
    data = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] x")
    code, _ = small_relay.send(
        data, mail_from=SELLER_ADDRESS, rcpt=alias, token=small_relay.world.keys["acme"]
    )
    assert code == 250


def test_pipelined_transaction_and_pipelined_junk(relay: Relay) -> None:
    w = relay.world
    alias = w.alias("alice", "acme")
    data = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] pipelined")
    client = raw(relay)
    client.command("EHLO client.example")
    assert client.command(f"AUTH PLAIN {plain_auth(w.keys['acme'])}")[0] == 235
    client.send(
        f"MAIL FROM:<{SELLER_ADDRESS}>\r\nRCPT TO:<{alias}>\r\nDATA\r\n".encode() + to_wire(data)
    )
    replies = [said(*client.reply()) for _ in range(4)]
    assert replies[0] == str(codes.SENDER_OK) and replies[1] == str(codes.RECIPIENT_OK)
    assert replies[3] == str(codes.QUEUED)
    # A refused recipient with the message pipelined behind it: the body is never a message.
    client.send(
        f"MAIL FROM:<{SELLER_ADDRESS}>\r\nRCPT TO:<nobody@{relay.settings.relay_domain}>\r\n"
        "DATA\r\n".encode()
        + to_wire(data)
    )
    assert said(*client.reply()) == str(codes.SENDER_OK)
    assert said(*client.reply()) == str(codes.BAD_DESTINATION)
    assert said(*client.reply()) == enhance("503 Error: need RCPT command")
    client.close()
    assert len(relay.delivered()) == 1
    still_serves(relay)


def test_fixed_replies_carry_enhanced_codes(relay: Relay) -> None:
    client = raw(relay)
    client.command("EHLO client.example")
    assert said(*client.command("RCPT TO:<a@b.example>")) == str(codes.BAD_SEQUENCE)
    assert said(*client.command("NOOP")) == "250 2.0.0 OK"
    assert said(*client.command("FROB")) == str(codes.COMMAND_UNRECOGNIZED)
    assert said(*client.command(f"VRFY {relay.world.alias('alice', 'acme')}")) == str(
        codes.CANNOT_VRFY
    )
    client.send("MAIL FROM:<jürgen@shop.example>\r\n".encode())
    assert said(*client.reply()) == str(codes.NON_ASCII_ADDRESS)
    assert said(*client.command("QUIT")) == "221 2.0.0 Bye"
    client.close()


# ------------------------------------------------------------------- smuggling, dot-stuffing


@pytest.mark.parametrize(("fake_end", "expected"), VARIANTS, ids=[repr(v[0]) for v in VARIANTS])
def test_smuggling_variants_through_the_relay(
    relay: Relay, fake_end: bytes, expected: codes.Reply
) -> None:
    w = relay.world
    first = _headers() + b"\r\nfirst body"
    smuggled = (
        f"MAIL FROM:<{SELLER_ADDRESS}>\r\nRCPT TO:<{w.alias('bob', 'acme')}>\r\nDATA\r\n".encode()
        + _headers()
        + b"\r\nsmuggled body\r\n"
    )
    before = len(relay.ledger())
    client = raw(relay)
    client.command("EHLO client.example")
    assert client.command(f"AUTH PLAIN {plain_auth(w.keys['acme'])}")[0] == 235
    assert client.command(f"MAIL FROM:<{SELLER_ADDRESS}>")[0] == 250
    assert client.command(f"RCPT TO:<{w.alias('alice', 'acme')}>")[0] == 250
    assert client.command("DATA")[0] == 354
    client.send(first + fake_end + smuggled + b".\r\n")
    assert said(*client.reply()) == str(expected)
    client.send(b"QUIT\r\n")
    rest = client.rest()
    assert rest.startswith(b"221 ") and rest.count(b"\r\n") == 1, rest  # nothing smuggled ran
    client.close()
    assert relay.delivered() == []
    # One message, the first transaction's whole DATA (smuggled commands as text), refused:
    # the only entry the transaction wrote, nothing for the smuggled recipient.
    [entry] = relay.ledger()[before:]
    assert entry["kind"] == "message_refused"
    assert entry["detail"]["reply"] == f"{expected.code} {expected.enhanced}"
    assert (entry["alias"], entry["detail"]["stage"]) == (w.alias("alice", "acme"), "data")


def test_lines_starting_with_a_dot_cross_both_hops_intact(relay: Relay) -> None:
    alias = relay.world.alias("alice", "acme")
    body = "Totals:\n.\n..\n.hidden line\n...\nend\n"
    data = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] dots", body=body)
    code, _ = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=relay.world.keys["acme"])
    assert code == 250
    [got] = relay.delivered()
    assert (
        got.data.split(b"\r\n\r\n", 1)[1] == b"Totals:\r\n.\r\n..\r\n.hidden line\r\n...\r\nend\r\n"
    )
    assert b"\n" not in got.data.replace(b"\r\n", b"")  # canonical CRLF only
