"""Abuse-report intake: ARF reports (the real samples unchanged), attached messages and .eml
files, redirects, nesting, and what is read from the original and from the report itself."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from mailveil.detect.intake import IntakeLimits, parse_report
from mailveil.detect.intake_model import Reason
from testpaths import shared_dir

ARF_DIR = shared_dir() / "vectors" / "arf-parsedmarc"
ALIAS = "alias-7f3k@relay.example"


def spam(to: str = ALIAS, body: str = "Buy our catalogues now.\n") -> EmailMessage:
    message = EmailMessage()
    message["Return-Path"] = "<bounce-77@spam.example>"
    message["Received"] = (
        "from mx.spam.example (mx.spam.example [198.51.100.7]) by mx.customer.example "
        f"with ESMTPS id 4YbC for <{to}>; Tue, 07 Jan 2025 10:15:00 +0000"
    )
    message["Received"] = (
        "from [10.0.0.5] (helo=builder) by mx.spam.example with esmtp; "
        "Tue, 07 Jan 2025 10:14:58 +0000"
    )
    message["Authentication-Results"] = (
        "mx.customer.example; spf=pass smtp.mailfrom=spam.example; "
        "dkim=pass (2048-bit key) header.d=spam.example header.s=sel1; "
        "dmarc=pass header.from=spam.example"
    )
    message["Received-SPF"] = (
        "pass (mx.customer.example: domain of spam.example) client-ip=198.51.100.7"
    )
    message["DKIM-Signature"] = (
        "v=1; a=rsa-sha256; c=relaxed/relaxed; d=spam.example; s=sel1; h=from:to:subject; "
        "bh=abc=; b=def="
    )
    message["Delivered-To"] = to
    message["X-Original-To"] = to
    message["From"] = "=?utf-8?q?Katalog_K=C3=B6nig?= <king@spam.example>"
    message["To"] = f"Customer <{to}>"
    message["Cc"] = "other@spam-target.example"
    message["Subject"] = "=?utf-8?b?R8O8bnN0aWdlIEthdGFsb2dl?="
    message["Date"] = "Tue, 07 Jan 2025 10:14:57 +0000"
    message["Message-ID"] = "<cat-1@spam.example>"
    message["List-Unsubscribe"] = "<mailto:unsub@spam.example>"
    message.set_content(body)
    return message


def report(text: str = "Please look at the attached spam.\n") -> EmailMessage:
    message = EmailMessage()
    message["Authentication-Results"] = "mx.relay.example; spf=pass smtp.mailfrom=home.example"
    message["DKIM-Signature"] = "v=1; a=ed25519-sha256; d=home.example; s=k1; h=from; bh=x; b=y"
    message["From"] = "Jo Customer <jo@home.example>"
    message["To"] = "report-abuse@relay.example"
    message["Subject"] = "Fwd: spam"
    message["Message-ID"] = "<rep-1@home.example>"
    message.set_content(text)
    return message


def assert_is_spam(result_original: object) -> None:
    from mailveil.detect.intake_model import OriginalMessage

    assert isinstance(result_original, OriginalMessage)
    o = result_original
    assert o.completeness == "full"
    assert o.return_path == "bounce-77@spam.example"
    assert o.sender is not None and o.sender.address == "king@spam.example"
    assert o.sender.display_name == "Katalog König"
    assert o.to == (ALIAS,)
    assert o.cc == ("other@spam-target.example",)
    assert o.delivered_to == (ALIAS,) and o.x_original_to == (ALIAS,)
    assert o.subject == "Günstige Kataloge"
    assert o.message_id == "<cat-1@spam.example>"
    assert o.date is not None and o.date.isoformat() == "2025-01-07T10:14:57+00:00"
    first, second = o.received
    assert (first.from_host, first.by_host, first.ip) == (
        "mx.spam.example",
        "mx.customer.example",
        "198.51.100.7",
    )
    assert first.for_address == ALIAS
    assert first.date is not None and first.date.isoformat() == "2025-01-07T10:15:00+00:00"
    assert (second.ip, second.helo) == ("10.0.0.5", "builder")
    methods = {(r.method, r.result) for r in o.auth_results}
    assert methods == {("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")}
    dkim = next(r for r in o.auth_results if r.method == "dkim")
    assert ("header.d", "spam.example") in dkim.properties
    assert o.received_spf and o.received_spf[0].startswith("pass")
    assert [(d.domain, d.selector) for d in o.dkim] == [("spam.example", "sel1")]
    assert o.list_unsubscribe == "<mailto:unsub@spam.example>"
    assert ALIAS in o.recipients and "other@spam-target.example" in o.recipients


# ------------------------------------------------------------------------- the ARF samples

# What each real sample says (where it says it); every other file must parse as well.
ARF_EXPECTED: dict[str, dict[str, object]] = {
    "DMARC Failure Report for domain.de (mail-from=sharepoint@domain.de, ip=10.10.10.10).eml": {
        "feedback_type": "auth-failure",
        "source_ip": "10.10.10.10",
        "original_mail_from": "sharepoint@domain.de",
        "sender": "sharepoint@domain.de",
        "rcpt": ("peter.pan@domain.de",),
        "shape": "arf",
    },
    "[Netease DMARC Failure Report] Rent Reminder.eml": {
        "feedback_type": "auth-failure",
        "source_ip": "167.89.69.24",
        "original_mail_from": "bounces+1137616-c1ad-xsj399=163.com@email.entrata.com",
        "sender": "info@cardinal.com",
        "shape": "arf",
    },
    "dmarc_ruf_report_linkedin.eml": {
        "feedback_type": "auth-failure",
        "source_ip": "10.10.10.10",
        "sender": "sender@example.com",
        "rcpt": ("recipient@linkedin.com",),
        "shape": "arf",
    },
    "dmarc_ruf_report_linkedin.crlf.eml": {
        "feedback_type": "auth-failure",
        "source_ip": "10.10.10.10",
        "sender": "sender@example.com",
        "rcpt": ("recipient@linkedin.com",),
        "shape": "arf",
    },
    "exim_plain_text_only_no_arf_part.eml": {
        "sender": "user@example.com",
        "first_hop_ip": "203.0.113.68",
        "shape": "headers_only",
    },
}


def arf_samples() -> list[Path]:
    return sorted(ARF_DIR.glob("*.eml"))


def test_the_arf_samples_are_there() -> None:
    assert {p.name for p in arf_samples()} >= set(ARF_EXPECTED)


@pytest.mark.parametrize("path", arf_samples(), ids=lambda p: p.name[:40])
def test_every_arf_sample_parses_unchanged(path: Path) -> None:
    result = parse_report(path.read_bytes())
    assert result.outcome == "found", result.reason
    assert result.original is not None and result.original.sender is not None
    assert result.envelope is not None and result.envelope.sender is not None
    expected = ARF_EXPECTED.get(path.name, {})
    if "shape" in expected:
        assert result.shape == expected["shape"]
    if result.shape == "arf":
        assert result.feedback is not None and result.depth == 1
    feedback = result.feedback
    if "feedback_type" in expected:
        assert feedback is not None and feedback.feedback_type == expected["feedback_type"]
    if "source_ip" in expected:
        assert feedback is not None and feedback.source_ip == expected["source_ip"]
    if "original_mail_from" in expected:
        assert feedback is not None
        assert feedback.original_mail_from == expected["original_mail_from"]
    if "sender" in expected:
        assert result.original.sender.address == expected["sender"]
    if "rcpt" in expected:
        assert feedback is not None and feedback.original_rcpt_to == expected["rcpt"]
        assert set(expected["rcpt"]) <= set(result.recipients)  # type: ignore[call-overload]
    if "first_hop_ip" in expected:
        assert result.original.received[0].ip == expected["first_hop_ip"]


def test_arf_sample_details() -> None:
    linkedin = parse_report((ARF_DIR / "dmarc_ruf_report_linkedin.eml").read_bytes())
    o = linkedin.original
    assert o is not None and o.return_path == ""  # the null sender, not "absent"
    assert [h.ip for h in o.received] == ["10.10.10.10", "10.156.68.14", "127.0.0.1"]
    assert o.received[0].helo == "mail02.someserver.com"
    assert ("spf", "neutral") in {(r.method, r.result) for r in o.auth_results}
    assert linkedin.feedback is not None
    assert linkedin.feedback.original_mail_from is None  # empty in the sample
    assert linkedin.feedback.reported_domains == ("example.com",)
    assert linkedin.feedback.arrival_date is not None
    # The base64-encoded feedback part of the Netease sample is decoded, within budget.
    netease_path = ARF_DIR / "[Netease DMARC Failure Report] Rent Reminder.eml"
    netease = parse_report(netease_path.read_bytes())
    assert netease.feedback is not None and netease.feedback.reported_domains == ("cardinal.com",)
    assert netease.stats.decoded_bytes > 0
    assert netease.original is not None and netease.original.received[1].date is not None
    exim = parse_report((ARF_DIR / "exim_plain_text_only_no_arf_part.eml").read_bytes())
    assert exim.original is not None and exim.original.completeness == "headers"
    # An IPv4 client seen through an IPv6 socket is reported as the IPv4 address.
    assert exim.original.received[1].ip == "203.0.113.68"
    assert exim.original.subject == "Payment from your account."


def arf(third: str | None, *, headers_only: bool = False) -> bytes:
    fields = (
        "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        "Original-Mail-From: <bounce-77@spam.example>\r\n"
        f"Original-Rcpt-To: <{ALIAS}>\r\nArrival-Date: Tue, 07 Jan 2025 10:15:00 +0000\r\n"
        "Source-IP: 198.51.100.7\r\nReported-Domain: spam.example\r\n"
        "Reported-URI: http://spam.example/buy\r\n"
    )
    kind = "text/rfc822-headers" if headers_only else "message/rfc822"
    tail = f"--B\r\nContent-Type: {kind}\r\n\r\n{third}\r\n" if third is not None else ""
    return (
        "From: <abuse@isp.example>\r\nTo: report-abuse@relay.example\r\n"
        "Subject: FW: spam\r\nMessage-ID: <arf-1@isp.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        f"--B\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n"
        f"{tail}--B--\r\n"
    ).encode()


def test_arf_with_a_full_original() -> None:
    result = parse_report(arf(spam().as_string(policy=SMTP)))
    assert (result.outcome, result.shape, result.depth) == ("found", "arf", 1)
    assert_is_spam(result.original)
    fb = result.feedback
    assert fb is not None and fb.feedback_type == "abuse" and fb.version == "1"
    assert fb.original_rcpt_to == (ALIAS,) and fb.reported_uris == ("http://spam.example/buy",)
    assert fb.arrival_date is not None and ("Source-IP", "198.51.100.7") in fb.fields


def test_arf_with_headers_only_and_with_no_copy() -> None:
    headers = spam().as_string(policy=SMTP).split("\r\n\r\n")[0]
    result = parse_report(arf(headers, headers_only=True))
    assert result.outcome == "found" and result.shape == "arf"
    assert result.original is not None and result.original.completeness == "headers"
    assert result.original.received[0].ip == "198.51.100.7"
    bare = parse_report(arf(None))
    assert bare.outcome == "found" and bare.original is not None
    assert bare.original.completeness == "feedback"
    assert bare.original.return_path == "bounce-77@spam.example"
    assert bare.recipients == (ALIAS,)
    assert bare.notes


# -------------------------------------------------------------------- attached messages


def test_the_report_envelope() -> None:
    wrapper = report()
    wrapper.add_attachment(spam())
    result = parse_report(wrapper.as_bytes())
    env = result.envelope
    assert env is not None and env.sender is not None
    assert (env.sender.address, env.sender.display_name) == ("jo@home.example", "Jo Customer")
    assert env.message_id == "<rep-1@home.example>" and env.subject == "Fwd: spam"
    assert env.has_authentication_results and env.has_dkim_signature
    assert [(d.domain, d.selector) for d in env.dkim] == [("home.example", "k1")]
    assert env.auth_results[0].method == "spf"


def test_message_rfc822_attachment() -> None:
    wrapper = report()
    wrapper.add_attachment(spam())
    result = parse_report(wrapper.as_bytes())
    assert (result.outcome, result.reason) == ("found", Reason.FOUND)
    assert result.shape == "rfc822_attachment"
    assert result.depth == 1 and result.path == ("rfc822_attachment",)
    assert_is_spam(result.original)


@pytest.mark.parametrize("ctype", ["application/octet-stream", "message/rfc822"])
@pytest.mark.parametrize("cte", ["base64", "7bit"])
def test_eml_file_attachment(ctype: str, cte: str) -> None:
    data = spam().as_bytes(policy=SMTP)
    body = base64.encodebytes(data).decode() if cte == "base64" else data.decode()
    raw = (
        "From: Jo <jo@home.example>\r\nTo: report-abuse@relay.example\r\nSubject: spam\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        "--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        f'--XX\r\nContent-Type: {ctype}; name="spam.eml"\r\n'
        f'Content-Disposition: attachment; filename="Spam.EML"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n--XX--\r\n"
    ).encode()
    result = parse_report(raw)
    assert (result.outcome, result.shape, result.depth) == ("found", "eml_attachment", 1)
    assert_is_spam(result.original)
    if cte == "base64":
        assert result.stats.decoded_bytes >= len(data)


def test_redirected_message_is_its_own_original() -> None:
    message = spam()
    message["Resent-From"] = "jo@home.example"
    message["Resent-To"] = "report-abuse@relay.example"
    result = parse_report(message.as_bytes())
    assert (result.outcome, result.shape, result.depth) == ("found", "redirect", 0)
    assert_is_spam(result.original)


def test_nested_attachments_unwrap_to_the_innermost() -> None:
    middle = report("my neighbour got this too\n")
    middle.replace_header("From", "Neighbour <n@other.example>")
    middle.add_attachment(spam())
    outer = report()
    outer.add_attachment(middle)
    result = parse_report(outer.as_bytes())
    assert result.path == ("rfc822_attachment", "rfc822_attachment")
    assert result.depth == 2
    assert_is_spam(result.original)
    # And an attached forward that carries the spam inline.
    inline = report(
        "FYI\n\n---------- Forwarded message ---------\n"
        "From: King <king@spam.example>\nDate: Tue, Jan 7, 2025 at 10:15 AM\n"
        f"Subject: Cheap\nTo: <{ALIAS}>\n\nBuy\n"
    )
    outer = report()
    outer.add_attachment(inline)
    result = parse_report(outer.as_bytes())
    assert result.path == ("rfc822_attachment", "inline_gmail") and result.depth == 2
    assert result.original is not None and result.original.to == (ALIAS,)


def test_several_attached_messages_read_the_first_and_say_so() -> None:
    wrapper = report()
    wrapper.add_attachment(spam())
    wrapper.add_attachment(spam(to="alias-other@relay.example"))
    result = parse_report(wrapper.as_bytes())
    assert result.original is not None and result.original.to == (ALIAS,)
    assert any("several" in note for note in result.notes)


def test_no_original() -> None:
    result = parse_report(report("I keep getting spam from you, please stop!\n").as_bytes())
    assert (result.outcome, result.reason) == ("no_original", Reason.NO_ORIGINAL)
    assert result.detail == "no original message found in the report"
    assert result.original is None and result.envelope is not None
    assert result.depth == 0


def test_limits_default_values_are_the_documented_ones() -> None:
    limits = IntakeLimits()
    assert limits.max_raw_bytes == 10 * 1024 * 1024 and limits.time_budget_s == 2.0
