"""Bounce reading: RFC 3464 reports (Postfix's, Gmail's, Exchange's), the plain-text shapes of
qmail, Exim, Yahoo and old Exchange, delay warnings, auto-replies, and garbage that must never
raise."""

from __future__ import annotations

import smtplib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from postfix_harness import Smarthost

from mailveil.relay.dsn import (
    FORMAT_NONE,
    FORMAT_RFC3464,
    FORMAT_TEXT,
    KIND_AUTOREPLY,
    KIND_DELAYED,
    KIND_HARD,
    KIND_SOFT,
    KIND_SUCCESS,
    KIND_UNKNOWN,
    KINDS,
    parse_dsn,
    status_in_text,
)

REAL = "nobody@example.org"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _report(per_recipient: str, *, human: str = "Delivery failed.", returned: str = "") -> bytes:
    """A multipart/report around the given per-recipient block(s)."""
    returned_part = f"--B\nContent-Type: message/rfc822\n\n{returned}\n" if returned else ""
    return _crlf(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"
        "To: bounce+tok@relay.example.test\nSubject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\n{human}\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n\n"
        f"{per_recipient}\n"
        f"{returned_part}--B--\n"
    )


POSTFIX = _report(
    f"Final-Recipient: rfc822; {REAL}\nOriginal-Recipient: rfc822;{REAL}\nAction: failed\n"
    "Status: 5.1.1\nRemote-MTA: dns; mx.example.org\n"
    f"Diagnostic-Code: smtp; 550 5.1.1 <{REAL}>: Recipient address\n    rejected: User unknown\n",
    human=f"<{REAL}>: host mx.example.org[192.0.2.1] said: 550 5.1.1 <{REAL}>: "
    "Recipient address rejected",
    returned=f"From: x@relay.example.test\nTo: {REAL}\nMessage-ID: <m1@relay.example.test>\n"
    "Subject: your order\n\nPlease reply: 451 4.3.0 is what the old server said.\n",
)

GMAIL = _report(
    f"Final-Recipient: rfc822; {REAL}\nAction: failed\nStatus: 5.1.1\n"
    "Remote-MTA: dns; example-org.mail.protection.example. (192.0.2.7, the server for the "
    "domain example.org.)\n"
    "Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not\n"
    " exist. Please try double-checking the recipient's email address for typos or\n"
    " unnecessary spaces. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser\n",
    human="** Address not found **\n\nYour message wasn't delivered because the address "
    "couldn't be found.",
)

EXCHANGE = _crlf(
    "From: postmaster@outlook.example\nTo: bounce+tok@relay.example.test\n"
    "Subject: Undeliverable: your order\nMIME-Version: 1.0\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="X"\n\n'
    '--X\nContent-Type: multipart/alternative; boundary="Y"\n\n'
    "--Y\nContent-Type: text/plain; charset=us-ascii\n\n"
    f"Delivery has failed to these recipients or groups:\n\n{REAL}\n"
    "The email address you entered couldn't be found.\n\n"
    "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found'\n"
    "--Y\nContent-Type: text/html; charset=us-ascii\n\n<p>Delivery has failed</p>\n--Y--\n"
    "--X\nContent-Type: message/delivery-status\n\n"
    "Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.outlook.example\n"
    "Received-From-MTA: dns;relay.example.test\n\n"
    f"Final-Recipient: rfc822;{REAL}\nAction: failed\nStatus: 5.1.10\n"
    "Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by\n"
    " SMTP address lookup\n"
    "--X\nContent-Type: text/rfc822-headers\n\n"
    f"From: x@relay.example.test\nTo: {REAL}\nMessage-ID: <m2@relay.example.test>\n--X--\n"
)

QMAIL = _crlf(
    "From: MAILER-DAEMON@mail.example.net\nTo: bounce+tok@relay.example.test\n"
    "Subject: failure notice\n\n"
    "Hi. This is the qmail-send program at mail.example.net.\n"
    "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
    "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
    f"<{REAL}>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
    "--- Below this line is a copy of the message.\n\n"
    f"Return-Path: <bounce+tok@relay.example.test>\nTo: {REAL}\nSubject: x\n\n"
    "temporary 421 4.4.2 noise in the original\n"
)

EXIM = _crlf(
    "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
    "To: bounce+tok@relay.example.test\n"
    "Subject: Mail delivery failed: returning message to sender\n\n"
    "This message was created automatically by mail delivery software.\n\n"
    "A message that you sent could not be delivered to one or more of its\n"
    "recipients. This is a permanent error. The following address(es) failed:\n\n"
    f"  {REAL}\n    host mx.example.org [192.0.2.1]\n"
    f"    SMTP error from remote mail server after RCPT TO:<{REAL}>:\n"
    f"    550 5.2.1 <{REAL}>: Mailbox disabled\n\n"
    "------ This is a copy of the message, including all the headers. ------\n\n"
    f"Return-path: <bounce+tok@relay.example.test>\nTo: {REAL}\n\nhello\n"
)

EXIM_DELAY = _crlf(
    "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
    "To: bounce+tok@relay.example.test\n"
    "Subject: Warning: message 1abcDE-000123-AB delayed 24 hours\n\n"
    "This message was created automatically by mail delivery software.\n"
    "A message that you sent has not yet been delivered to one or more of its\n"
    "recipients after more than 24 hours on the queue on mx.example.org.\n\n"
    f"  {REAL}\n    Delay reason: SMTP error from remote mail server after RCPT TO:<{REAL}>:\n"
    "    451 4.7.1 Greylisted, please try again later\n\n"
    "No action is required on your part. Delivery attempts will continue for some time.\n"
)

YAHOO = _crlf(
    "From: MAILER-DAEMON@yahoo.example\nTo: bounce+tok@relay.example.test\n"
    "Subject: Failure Notice\n\n"
    "Sorry, we were unable to deliver your message to the following address.\n\n"
    f"<{REAL}>:\n554: delivery error: dd This user doesn't have a yahoo.example account "
    f"({REAL}) [0] - mta1234.mail.ne1.yahoo.example\n\n"
    "--- Original message follows.\n\n"
    f"To: {REAL}\nSubject: hi\n\n550 5.7.1 quoted noise\n"
)

OLD_EXCHANGE = _crlf(
    "From: System Administrator <postmaster@corp.example>\nTo: bounce+tok@relay.example.test\n"
    "Subject: Undeliverable: your order\nContent-Type: text/plain\n\n"
    "Your message did not reach some or all of the intended recipients.\n\n"
    "The following recipient(s) cannot be reached:\n\n"
    f"      {REAL} on 25/11/2026 10:00\n"
    "            There was a SMTP communication problem with the recipient's email server.\n"
    "            <corp.example #5.5.0 smtp;550 Requested action not taken: mailbox unavailable>\n"
)

DELAYED_REPORT = _report(
    f"Final-Recipient: rfc822; {REAL}\nAction: delayed\nStatus: 4.4.1\n"
    "Diagnostic-Code: X-Postfix; connect to mx.example.org[192.0.2.1]:25: Connection refused\n"
    "Will-Retry-Until: Mon, 30 Nov 2026 10:00:00 +0000\n",
    human="This is the mail system at host mx.example.org.\n\n####### THIS IS A WARNING ONLY. "
    "YOU DO NOT NEED TO RESEND YOUR MESSAGE. #######",
)

EXPIRED_REPORT = _report(
    f"Final-Recipient: rfc822; {REAL}\nAction: failed\nStatus: 4.4.7\n"
    "Diagnostic-Code: X-Postfix; delivery temporarily suspended: connect to\n"
    "    mx.example.org[192.0.2.1]:25: Connection timed out\n"
)

OUT_OF_OFFICE = _crlf(
    "From: Buyer <buyer@example.org>\nTo: bounce+tok@relay.example.test\n"
    "Subject: Automatic reply: your order\nAuto-Submitted: auto-replied\n\n"
    "I am out of the office until Monday. For urgent matters call 555 1234.\n"
)


@pytest.mark.parametrize(
    ("raw", "kind", "fmt", "status"),
    [
        (POSTFIX, KIND_HARD, FORMAT_RFC3464, "5.1.1"),
        (GMAIL, KIND_HARD, FORMAT_RFC3464, "5.1.1"),
        (EXCHANGE, KIND_HARD, FORMAT_RFC3464, "5.1.10"),
        (QMAIL, KIND_HARD, FORMAT_TEXT, "5.1.1"),
        (EXIM, KIND_HARD, FORMAT_TEXT, "5.2.1"),
        (EXIM_DELAY, KIND_DELAYED, FORMAT_TEXT, "4.7.1"),
        (YAHOO, KIND_HARD, FORMAT_TEXT, "5.0.0"),
        (OLD_EXCHANGE, KIND_HARD, FORMAT_TEXT, "5.5.0"),
        (DELAYED_REPORT, KIND_DELAYED, FORMAT_RFC3464, "4.4.1"),
        (EXPIRED_REPORT, KIND_SOFT, FORMAT_RFC3464, "4.4.7"),
        (OUT_OF_OFFICE, KIND_AUTOREPLY, FORMAT_NONE, None),
    ],
    ids=[
        "postfix",
        "gmail",
        "exchange",
        "qmail",
        "exim",
        "exim-delay",
        "yahoo",
        "old-exchange",
        "delayed",
        "expired",
        "out-of-office",
    ],
)
def test_report_shapes(raw: bytes, kind: str, fmt: str, status: str | None) -> None:
    dsn = parse_dsn(raw)
    assert (dsn.kind, dsn.format, dsn.status) == (kind, fmt, status)
    assert REAL not in repr(dsn), "the real address must not show in a repr (logs)"


def test_rfc3464_fields() -> None:
    dsn = parse_dsn(POSTFIX)
    assert dsn.hard and dsn.failed and not dsn.soft
    assert dsn.action == "failed"
    assert dsn.reporting_mta == "mx.example.org"
    assert dsn.original_message_id == "<m1@relay.example.test>"
    (recipient,) = dsn.recipients
    assert recipient.recipient == REAL
    assert recipient.remote_mta == "mx.example.org"
    assert recipient.diagnostic is not None
    assert recipient.diagnostic.startswith("550 5.1.1")
    assert "User unknown" in recipient.diagnostic  # folded continuation joined


def test_exchange_returned_headers_give_the_message_id() -> None:
    assert parse_dsn(EXCHANGE).original_message_id == "<m2@relay.example.test>"


def test_text_bounce_reads_the_report_not_the_quoted_original() -> None:
    """qmail's and Yahoo's quoted originals carry other codes; only the report counts."""
    qmail = parse_dsn(QMAIL)
    assert qmail.status == "5.1.1"
    assert qmail.diagnostic is not None and "no mailbox" in qmail.diagnostic
    assert parse_dsn(YAHOO).status == "5.0.0"


def test_worst_recipient_decides() -> None:
    raw = _report(
        "Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0\n\n"
        "Final-Recipient: rfc822; late@example.org\nAction: delayed\nStatus: 4.2.2\n\n"
        f"Final-Recipient: rfc822; {REAL}\nAction: failed\nStatus: 5.2.1\n"
    )
    dsn = parse_dsn(raw)
    assert dsn.kind == KIND_HARD and dsn.status == "5.2.1"
    assert [r.kind for r in dsn.recipients] == [KIND_SUCCESS, KIND_DELAYED, KIND_HARD]


def test_success_report() -> None:
    raw = _report(f"Final-Recipient: rfc822; {REAL}\nAction: delivered\nStatus: 2.0.0\n")
    assert parse_dsn(raw).kind == KIND_SUCCESS


def test_status_missing_is_read_from_the_diagnostic_code() -> None:
    raw = _report(
        f"Final-Recipient: rfc822; {REAL}\nAction: failed\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"
    )
    dsn = parse_dsn(raw)
    assert (dsn.kind, dsn.status) == (KIND_HARD, "5.2.2")


def test_failed_without_any_code_is_soft() -> None:
    """Without a status, a failure is not counted as hard against the address."""
    raw = _report(f"Final-Recipient: rfc822; {REAL}\nAction: failed\n")
    assert parse_dsn(raw).kind == KIND_SOFT


def test_global_delivery_status_utf8() -> None:
    raw = _crlf(
        "From: MAILER-DAEMON@mx.example.org\nTo: bounce+tok@relay.example.test\n"
        "Subject: Undelivered\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=global-delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=utf-8\n\nZustellung fehlgeschlagen.\n"
        "--B\nContent-Type: message/global-delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: utf-8; jürgen@bücher.example\nAction: failed\nStatus: 5.1.1\n"
        "--B--\n"
    )
    dsn = parse_dsn(raw)
    assert (dsn.kind, dsn.format, dsn.status) == (KIND_HARD, FORMAT_RFC3464, "5.1.1")
    assert dsn.recipients[0].recipient == "jürgen@bücher.example"


def test_base64_delivery_status_part() -> None:
    import base64

    block = (
        f"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; {REAL}\r\n"
        "Action: failed\r\nStatus: 5.7.1\r\n"
    )
    encoded = base64.encodebytes(block.encode()).decode()
    raw = _crlf(
        "From: MAILER-DAEMON@mx.example.org\nTo: bounce+tok@relay.example.test\n"
        "Subject: Undelivered\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nRefused.\n"
        "--B\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
        f"{encoded}--B--\n"
    )
    dsn = parse_dsn(raw)
    assert (dsn.kind, dsn.status) == (KIND_HARD, "5.7.1")


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("host mx[192.0.2.1] said: 550 5.1.1 <a@b>: unknown", "5.1.1"),
        ("550-5.7.26 Unauthenticated email is not accepted", "5.7.26"),
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"),
        ("554: delivery error: dd not a user", "5.0.0"),
        ("Remote Server returned '550 Mailbox unavailable'", "5.0.0"),
        ("451 4.7.1 Greylisted", "4.7.1"),
        ("550 4.2.2 mixed classes", "5.0.0"),
        ("Postfix 3.7.11 on 10.5.1.1 said nothing", None),
        ("This is a permanent error; user unknown", "5.0.0"),
        ("Delivery attempts will continue; the message has not yet been delivered", "4.0.0"),
        ("", None),
    ],
)
def test_status_in_text(text: str, status: str | None) -> None:
    assert status_in_text(text) == status


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Subject: hello\r\n\r\njust a message\r\n",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n--B',
        b"Content-Type: message/delivery-status\r\n\r\n\r\n\r\n",
        b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: 9.9.9\r\n",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 3000,
        b"From: MAILER-DAEMON@x\r\nSubject: Undeliverable\r\n\r\n" + b"5" * 200_000,
    ],
    ids=["empty", "binary", "plain", "truncated", "empty-status", "bad-status", "deep", "huge"],
)
def test_garbage_is_unknown_not_an_error(raw: bytes) -> None:
    dsn = parse_dsn(raw)
    assert dsn.kind in KINDS
    assert dsn.kind in (KIND_UNKNOWN, KIND_SOFT)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(lambda t: t.encode("utf-8")))
def test_any_bytes_never_raise(raw: bytes) -> None:
    assert parse_dsn(raw).kind in KINDS


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_reports_never_raise(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from([POSTFIX, GMAIL, EXCHANGE, QMAIL, EXIM, YAHOO]))
    cut = data.draw(st.integers(0, len(base)))
    junk = data.draw(st.binary(max_size=50))
    assert parse_dsn(base[:cut] + junk + base[cut:]).kind in KINDS


def test_postfix_dsn_from_the_real_smarthost(postfix_smarthost: Smarthost) -> None:
    """Postfix's own report, produced live: the sink refuses the recipient, Postfix bounces."""
    sink = postfix_smarthost.sink
    sink.refuse_rcpt = lambda rcpt: (
        f"550 5.2.1 <{rcpt}>: Mailbox disabled" if rcpt == REAL else None
    )
    marker = uuid.uuid4().hex
    verp = f"bounce+{marker}@relay.example.test"
    message = _crlf(
        f"From: x@relay.example.test\nTo: {REAL}\nMessage-ID: <{marker}@relay.example.test>\n"
        "Subject: hello\n\nhello\n"
    )
    with smtplib.SMTP(postfix_smarthost.host, postfix_smarthost.port, timeout=10) as client:
        client.sendmail(verp, [REAL], message)
    (report,) = [m for m in sink.wait_for(lambda got: len(got) >= 1) if verp in m.rcpt_tos]
    dsn = parse_dsn(report.data)
    assert (dsn.kind, dsn.format, dsn.status) == (KIND_HARD, FORMAT_RFC3464, "5.2.1")
    assert dsn.original_message_id == f"<{marker}@relay.example.test>"
    assert dsn.diagnostic is not None and "Mailbox disabled" in dsn.diagnostic
