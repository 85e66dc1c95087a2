"""SMTP smuggling regression tests over a real socket, against the relay's own server and
``handle_DATA`` (the ``relay`` fixture), and the pure checks of ``relay.smuggling``.

The end-of-data variants themselves (a first message whose body holds a fake end-of-data and a
complete second transaction) run through the relay in test_relay_server.py; here: the control
(the same transactions pipelined with proper CRLF are two delivered messages), the connection
after a refusal, and exact bytes through ``to_wire``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from relay_server_kit import SELLER_ADDRESS, Relay, message
from relay_testkit import RawClient

from mailveil.relay import codes
from mailveil.relay.errors import BareLineEnding, NulInData
from mailveil.relay.smuggling import canonical_crlf, check_data, refusal_for, to_wire


def _body(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def _open_transaction(relay: Relay, client: RawClient, rcpt: str) -> None:
    assert client.command("EHLO client.test")[0] == 250
    assert client.command(f"AUTH PLAIN {plain_auth(relay.world.keys['acme'])}")[0] == 235
    assert client.command(f"MAIL FROM:<{SELLER_ADDRESS}>")[0] == 250
    assert client.command(f"RCPT TO:<{rcpt}>")[0] == 250
    assert client.command("DATA")[0] == 354


def plain_auth(token: str) -> str:
    return base64.b64encode(f"\0anything\0{token}".encode()).decode()


def test_clean_pipelined_messages_are_both_accepted(
    relay: Relay, raw_client: Callable[[], RawClient]
) -> None:
    """The control: two transactions with proper CRLF, pipelined, are two delivered messages."""
    alias = relay.world.alias("alice", "acme")
    first = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] first", body="first\n")
    second = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] second", body="second\n")
    pipelined = f"MAIL FROM:<{SELLER_ADDRESS}>\r\nRCPT TO:<{alias}>\r\nDATA\r\n".encode()
    client = raw_client()
    _open_transaction(relay, client, alias)
    client.send(first + b".\r\n" + pipelined + second + b".\r\n")
    assert client.reply() == (codes.QUEUED.code, codes.QUEUED.text)
    assert client.reply()[0] == 250  # MAIL
    assert client.reply()[0] == 250  # RCPT
    assert client.reply()[0] == 354  # DATA
    assert client.reply() == (codes.QUEUED.code, codes.QUEUED.text)
    assert [_body(got.data) for got in relay.delivered()] == [b"first\r\n", b"second\r\n"]


def test_connection_stays_usable_after_a_refusal(
    relay: Relay, raw_client: Callable[[], RawClient]
) -> None:
    alias = relay.world.alias("alice", "acme")
    client = raw_client()
    _open_transaction(relay, client, alias)
    client.send(b"Subject: x\r\n\r\nbad\nline\r\n.\r\n")
    assert client.reply()[0] == codes.BARE_LF.code
    assert client.command(f"MAIL FROM:<{SELLER_ADDRESS}>")[0] == 250
    assert client.command(f"RCPT TO:<{alias}>")[0] == 250
    assert client.command("DATA")[0] == 354
    client.send(message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] y", body="good\n"))
    client.send(b".\r\n")
    assert client.reply()[0] == 250
    assert [_body(got.data) for got in relay.delivered()] == [b"good\r\n"]


@pytest.mark.parametrize(
    ("data", "error", "reply"),
    [
        (b"a\nb\r\n", BareLineEnding, codes.BARE_LF),
        (b"a\rb\r\n", BareLineEnding, codes.BARE_CR),
        (b"a\r\n\x00\r\n", NulInData, codes.NUL_IN_DATA),
        (b"trailing CR\r", BareLineEnding, codes.BARE_CR),
        (b"\nleading LF\r\n", BareLineEnding, codes.BARE_LF),
    ],
)
def test_check_data_names_the_first_offending_byte(
    data: bytes, error: type[Exception], reply: codes.Reply
) -> None:
    with pytest.raises(error) as raised:
        check_data(data)
    assert getattr(raised.value, "reply", None) == reply
    assert refusal_for(data) == reply


def test_check_data_accepts_clean_crlf() -> None:
    check_data(b"Subject: ok\r\n\r\nline one\r\n.leading dot\r\n\r\n")
    assert refusal_for(b"") is None


def test_to_wire_canonical_crlf_and_dot_stuffing() -> None:
    message = b".starts with dot\nmiddle\r.\r\n..two dots\r\nend."
    assert to_wire(message) == (
        b"..starts with dot\r\nmiddle\r\n..\r\n...two dots\r\nend.\r\n.\r\n"
    )
    assert to_wire(b"") == b"\r\n.\r\n"
    with pytest.raises(NulInData):
        to_wire(b"a\x00b")


@given(st.binary(max_size=300).filter(lambda b: b"\x00" not in b))
def test_to_wire_ends_data_only_at_its_end(message: bytes) -> None:
    wire = to_wire(message)
    assert refusal_for(wire) is None
    assert wire.endswith(b"\r\n.\r\n")
    body = wire[: -len(b".\r\n")]
    assert b"\r\n.\r\n" not in body
    assert not body.startswith(b".\r\n")
    # Undoing the stuffing as RFC 5321 4.5.2 says gives back the canonical message.
    lines = body.split(b"\r\n")
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    assert unstuffed == canonical_crlf(message)


def test_to_wire_through_smtplib_reaches_the_sink_intact(relay: Relay) -> None:
    alias = relay.world.alias("alice", "acme")
    data = (
        f"From: <{SELLER_ADDRESS}>\nTo: <{alias}>\r\nSubject: [shipping] dots\r\n\r\n".encode()
        + b".\n..\r\n.leading\rmixed\nendings\r\nno final newline"
    )
    with relay.client(token=relay.world.keys["acme"]) as client:
        assert client.mail(SELLER_ADDRESS)[0] == 250
        assert client.rcpt(alias)[0] == 250
        # Raw DATA through smtplib's own socket: smtplib.data() would stuff the dots again.
        assert client.docmd("DATA")[0] == 354
        client.send(to_wire(data))
        code, _ = client.getreply()
        assert code == codes.QUEUED.code
    [got] = relay.delivered()
    assert _body(got.data) == _body(canonical_crlf(data))
    assert _body(got.data) == b".\r\n..\r\n.leading\r\nmixed\r\nendings\r\nno final newline\r\n"


_DATA_PARTS = st.sampled_from([b"a", b"\r\n", b"\r", b"\n", b"\x00", b".", b"\r\r\n", b"\n\r"])


@given(st.lists(_DATA_PARTS, max_size=12))
def test_the_crlf_shortcut_finds_what_the_full_search_finds(parts: list[bytes]) -> None:
    """Clean data (every CR and LF in a CRLF, no NUL) is told apart by counting; the refusal
    for anything else, and the canonical bytes, are what the full search gives."""
    data = b"".join(parts)
    offending = re.compile(rb"(?<!\r)\n|\r(?!\n)|\x00").search(data)
    if offending is None:
        check_data(data)
    else:
        with pytest.raises((BareLineEnding, NulInData), match=f"offset {offending.start()}$"):
            check_data(data)
    full = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    assert canonical_crlf(data) == full + (b"" if full.endswith(b"\r\n") else b"\r\n")
