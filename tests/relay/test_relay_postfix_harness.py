"""The Postfix test smarthost works: real clients (smtplib, swaks) through a private Postfix into
the sink, bare line endings refused, and a refused recipient bounced back as a real DSN."""

from __future__ import annotations

import email
import email.policy
import smtplib
import uuid

import pytest
from postfix_harness import Smarthost, postfix_version, swaks
from relay_testkit import RawClient

pytestmark = pytest.mark.slow  # a private Postfix


def _marker() -> str:
    return uuid.uuid4().hex


def test_smtplib_through_postfix_into_sink(postfix_smarthost: Smarthost) -> None:
    marker = _marker()
    message = (
        f"From: Shop <shop@example.test>\r\nTo: buyer@example.test\r\n"
        f"Subject: order {marker}\r\nMessage-ID: <{marker}@example.test>\r\n\r\n"
        f"Your order shipped.\r\n.leading dot survives dot-stuffing\r\n"
    ).encode()
    with smtplib.SMTP(postfix_smarthost.host, postfix_smarthost.port, timeout=10) as client:
        refused = client.sendmail("shop@example.test", ["buyer@example.test"], message)
    assert refused == {}

    got = postfix_smarthost.sink.wait_header("Message-ID", f"<{marker}@example.test>")
    assert got.mail_from == "shop@example.test"
    assert got.rcpt_tos == ("buyer@example.test",)
    assert got.peer == "127.0.0.1"
    parsed = email.message_from_bytes(got.data, policy=email.policy.default)
    assert parsed["Subject"] == f"order {marker}"
    assert "by smarthost.mailveil.localhost (Postfix)" in str(parsed["Received"])
    body = parsed.get_body()
    assert body is not None
    assert ".leading dot survives dot-stuffing" in body.get_content()
    assert b"\n" not in got.data.replace(b"\r\n", b"")


def test_swaks_through_postfix_into_sink(postfix_smarthost: Smarthost, swaks_path: str) -> None:
    marker = _marker()
    result = swaks(
        "--server", f"{postfix_smarthost.host}:{postfix_smarthost.port}",
        "--helo", "client.example.test",
        "--from", "seller@example.test",
        "--to", "first@example.test,second@example.test",
        "--header", f"Subject: swaks {marker}",
        "--header", f"Message-ID: <{marker}@example.test>",
        "--body", f"body {marker}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued" in result.stdout

    got = postfix_smarthost.sink.wait_header("Message-ID", f"<{marker}@example.test>")
    assert got.mail_from == "seller@example.test"
    assert sorted(got.rcpt_tos) == ["first@example.test", "second@example.test"]
    assert f"body {marker}".encode() in got.data


def test_postfix_refuses_bare_lf(postfix_smarthost: Smarthost) -> None:
    """The smarthost reads line endings as strictly as the relay (smtpd_forbid_bare_newline)."""
    client = RawClient(postfix_smarthost.host, postfix_smarthost.port)
    try:
        assert client.reply()[0] == 220
        assert client.command("EHLO client.example.test")[0] == 250
        assert client.command("MAIL FROM:<a@example.test>")[0] == 250
        assert client.command("RCPT TO:<b@example.test>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(b"Subject: smuggle\r\n\r\nline one\nline two\r\n.\r\n")
        code, text = client.reply()
    finally:
        client.close()
    assert (code, "bare <LF>" in text) == (550, True), (postfix_version(), code, text)
    assert postfix_smarthost.sink.messages == []


def test_refused_recipient_comes_back_as_a_postfix_dsn(postfix_smarthost: Smarthost) -> None:
    """A sink refusal makes Postfix bounce to the envelope sender, which also lands in the
    sink: the DSN tests use these real reports."""
    sink = postfix_smarthost.sink
    refusal = "550 5.1.1 <gone@example.test>: Recipient address rejected"
    sink.refuse_rcpt = lambda rcpt: refusal if rcpt.startswith("gone@") else None
    marker = _marker()
    message = (
        f"From: shop@example.test\r\nTo: gone@example.test\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@example.test>\r\n\r\nhello\r\n"
    ).encode()
    with smtplib.SMTP(postfix_smarthost.host, postfix_smarthost.port, timeout=10) as client:
        client.sendmail(f"bounce+{marker}@relay.example.test", ["gone@example.test"], message)

    got = sink.wait_for(
        lambda items: any(f"bounce+{marker}@" in " ".join(m.rcpt_tos) for m in items)
    )
    dsn = next(m for m in got if f"bounce+{marker}@relay.example.test" in m.rcpt_tos)
    assert dsn.mail_from == "<>"  # Bounces have the null sender.
    parsed = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    assert b"Status: 5.1.1" in dsn.data
