"""SMTP smuggling regression tests: one per known end-of-data variant, over a real socket.

Each sends a first message whose body holds a fake end-of-data followed by a complete second
transaction, then the one real ``<CR><LF>.<CR><LF>``. The server must hand the handler one
message at most, refuse it with the specific reply, and never answer the smuggled commands.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from relay_testkit import VARIANTS, RawClient, RunningServer

from mailveil.relay import codes
from mailveil.relay.errors import BareLineEnding, NulInData
from mailveil.relay.smuggling import canonical_crlf, check_data, refusal_for, to_wire

FIRST = b"From: <seller@example.org>\r\nTo: <alias@relay.test>\r\nSubject: first\r\n\r\nfirst body"
SMUGGLED = (
    b"MAIL FROM:<ceo@bank.example>\r\n"
    b"RCPT TO:<victim@relay.test>\r\n"
    b"DATA\r\n"
    b"From: <ceo@bank.example>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
)


def _open_transaction(client: RawClient) -> None:
    assert client.command("EHLO client.test")[0] == 250
    assert client.command("MAIL FROM:<seller@example.org>")[0] == 250
    assert client.command("RCPT TO:<alias@relay.test>")[0] == 250
    assert client.command("DATA")[0] == 354


@pytest.mark.parametrize(("fake_end", "expected"), VARIANTS, ids=[repr(v[0]) for v in VARIANTS])
def test_smuggled_transaction_is_refused_as_one_message(
    smtp_server: RunningServer,
    raw_client: Callable[[], RawClient],
    fake_end: bytes,
    expected: codes.Reply,
) -> None:
    client = raw_client()
    _open_transaction(client)
    client.send(FIRST + fake_end + SMUGGLED + b".\r\n")
    assert client.reply() == (expected.code, expected.text)
    client.send(b"QUIT\r\n")
    # Nothing else: a smuggled MAIL/RCPT/DATA would have produced 250/354 replies here.
    rest = client.rest()
    assert rest.startswith(b"221 ") and rest.count(b"\r\n") == 1, rest

    handler = smtp_server.handler
    assert handler.accepted == []
    assert len(handler.seen) == 1
    # The one message the handler saw is the whole thing, smuggled commands included as text.
    assert b"first body" in handler.seen[0]
    assert b"RCPT TO:<victim@relay.test>" in handler.seen[0]


def test_clean_pipelined_messages_are_both_accepted(
    smtp_server: RunningServer, raw_client: Callable[[], RawClient]
) -> None:
    """The control: the same two transactions with proper CRLF are two accepted messages."""
    client = raw_client()
    _open_transaction(client)
    client.send(FIRST + b"\r\n.\r\n" + SMUGGLED + b".\r\n")
    assert client.reply() == (codes.QUEUED.code, codes.QUEUED.text)
    assert client.reply()[0] == 250  # MAIL
    assert client.reply()[0] == 250  # RCPT
    assert client.reply()[0] == 354  # DATA
    assert client.reply() == (codes.QUEUED.code, codes.QUEUED.text)
    assert len(smtp_server.handler.accepted) == 2


def test_connection_stays_usable_after_a_refusal(
    smtp_server: RunningServer, raw_client: Callable[[], RawClient]
) -> None:
    client = raw_client()
    _open_transaction(client)
    client.send(b"Subject: x\r\n\r\nbad\nline\r\n.\r\n")
    assert client.reply()[0] == codes.BARE_LF.code
    assert client.command("MAIL FROM:<seller@example.org>")[0] == 250
    assert client.command("RCPT TO:<alias@relay.test>")[0] == 250
    assert client.command("DATA")[0] == 354
    client.send(b"Subject: y\r\n\r\ngood\r\n.\r\n")
    assert client.reply()[0] == 250
    assert smtp_server.handler.accepted == [b"Subject: y\r\n\r\ngood\r\n"]


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


def test_to_wire_through_smtplib_reaches_the_sink_intact(smtp_server: RunningServer) -> None:
    message = (
        b"From: <seller@example.org>\nSubject: dots\r\n\r\n"
        b".\n..\r\n.leading\rmixed\nendings\r\nno final newline"
    )
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("seller@example.org")[0] == 250
        assert client.rcpt("alias@relay.test")[0] == 250
        # Raw DATA through smtplib's own socket: smtplib.data() would stuff the dots again.
        assert client.docmd("DATA")[0] == 354
        client.send(to_wire(message))
        code, _ = client.getreply()
        assert code == codes.QUEUED.code
    assert smtp_server.handler.accepted == [canonical_crlf(message)]
    assert smtp_server.handler.accepted[0] == (
        b"From: <seller@example.org>\r\nSubject: dots\r\n\r\n"
        b".\r\n..\r\n.leading\r\nmixed\r\nendings\r\nno final newline\r\n"
    )
