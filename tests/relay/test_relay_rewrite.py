"""Rewriting and redaction, one hand-built message per shape; the invariant checked on each."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest
from relay_testkit import traces

from mailveil.relay import codes
from mailveil.relay.errors import (
    DuplicateFrom,
    HeaderInjection,
    HeaderNotUtf8,
    MalformedMessage,
    MissingFrom,
    RelayRefusal,
)
from mailveil.relay.parse import parse_message
from mailveil.relay.rewrite import (
    rewrite_customer_to_principal,
    rewrite_principal_to_customer,
    sanitize_display_name,
)

REAL = "alice.smith@example.com"
ALIAS = "c-7f3a@relay.test"
DOMAIN = "relay.test"


def relay(raw: bytes) -> bytes:
    out = rewrite_customer_to_principal(
        parse_message(raw), customer_alias=ALIAS, redactions={REAL: ALIAS}, relay_domain=DOMAIN
    )
    assert traces(out, REAL) == []
    assert b"\r\n" in out and b"\n" not in out.replace(b"\r\n", b"")
    return out


def parsed(out: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(out, policy=email.policy.default)


def simple(headers: bytes, body: bytes = b"hello\r\n") -> bytes:
    return (
        b"From: Alice <alice.smith@example.com>\r\nTo: <shop-1@relay.test>\r\n"
        + headers
        + (b"\r\n" + body)
    )


def test_from_becomes_the_alias_with_the_display_name_kept() -> None:
    out = parsed(relay(simple(b"Subject: hi\r\n")))
    assert out["From"].addresses[0].addr_spec == ALIAS
    assert out["From"].addresses[0].display_name == "Alice"
    assert out["To"].addresses[0].addr_spec == "shop-1@relay.test"
    assert out["Message-ID"].endswith("@relay.test>")


def test_identifying_headers_are_removed() -> None:
    headers = (
        b"Received: from laptop.home (203.0.113.9) by mx.example.com\r\n"
        b"X-Originating-IP: [203.0.113.9]\r\n"
        b"Return-Path: <alice.smith@example.com>\r\n"
        b"Sender: alice.smith@example.com\r\n"
        b"Reply-To: Alice <alice.private@example.net>\r\n"
        b"Disposition-Notification-To: alice.smith@example.com\r\n"
        b"Return-Receipt-To: alice.smith@example.com\r\n"
        b"X-Mailer: Thunderbird 115\r\nUser-Agent: Mutt/2.2\r\n"
        b"X-Sender: alice\r\nX-Envelope-From: <alice.smith@example.com>\r\n"
        b"Authentication-Results: mx.example.com; dkim=pass\r\n"
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none\r\n"
        b"DKIM-Signature: v=1; d=example.com; s=s1; b=abc\r\n"
        b"List-Unsubscribe: <mailto:alice.smith@example.com>\r\n"
        b"Message-ID: <1234@laptop.home>\r\nBcc: someone@example.org\r\n"
        b"Cc: spouse@example.net, <other-9@relay.test>\r\n"
        b"Date: Tue, 02 Jan 2024 10:00:00 +0530\r\nSubject: order\r\n"
    )
    out = relay(simple(headers))
    message = parsed(out)
    assert sorted(message.keys()) == sorted(["From", "To", "Cc", "Date", "Message-ID", "Subject"])
    assert message["Cc"].addresses[0].addr_spec == "other-9@relay.test"
    assert len(message["Cc"].addresses) == 1
    assert message["Date"].datetime.utcoffset().total_seconds() == 0
    assert message["Date"].datetime.hour == 4
    for secret in (b"203.0.113.9", b"laptop.home", b"alice.private", b"spouse", b"Thunderbird"):
        assert secret not in out


@pytest.mark.parametrize(
    "subject",
    [
        b"Subject: about alice.smith@example.com\r\n",
        b"Subject: about ALICE.Smith@Example.COM\r\n",
        b"Subject: =?utf-8?q?about_alice=2Esmith=40example=2Ecom_=C3=A9?=\r\n",
        b"Subject: =?utf-8?b?" + base64.b64encode(b"from alice.smith@example.com") + b"?=\r\n",
        # Split across two encoded-words, which a reader joins.
        b"Subject: =?utf-8?q?alice.smi?= =?iso-8859-1?q?th=40example.com?=\r\n",
        b"Subject: =?x-unknown?q?alice.smith=40example.com?=\r\n",
        b"Subject: alice.smith%40example.com &#97;lice.smith&commat;example&#x2e;com\r\n",
        b"Subject: raw UTF-8 \xc3\xa9 alice.smith@example.com\r\n",
    ],
)
def test_subject_redacted_in_any_encoding(subject: bytes) -> None:
    out = parsed(relay(simple(subject)))
    assert ALIAS in out["Subject"] or "relay.test" in out["Subject"]


def test_display_names_in_other_headers_and_from_are_cleaned() -> None:
    raw = (
        b'From: "alice.smith@example.com (Alice)" <alice.smith@example.com>\r\n'
        b'To: "Shop" <shop-1@relay.test>\r\nSubject: x\r\n\r\nbody\r\n'
    )
    out = parsed(relay(raw))
    assert out["From"].addresses[0].display_name == "(Alice)"


@pytest.mark.parametrize(
    ("cte", "body"),
    [
        (b"7bit", b"Write to alice.smith@example.com or mailto:Alice.Smith@example.com\r\n"),
        (b"8bit", "caf\u00e9 alice.smith@example.com\r\n".encode()),
        (b"quoted-printable", b"I am alice.sm=\r\nith@exam=\r\nple.com =C3=A9\r\n"),
        (b"quoted-printable", b"alice=2Esmith=40example.com\r\n"),
        (b"base64", base64.encodebytes("\u00e9 alice.smith@example.com\n".encode() * 5)),
        # Not base64 at all: a lenient decoder skips '@' and '.', the raw bytes still hold it.
        (b"base64", b"alice.smith@example.com\r\n"),
    ],
)
def test_text_plain_redacted_in_any_transfer_encoding(cte: bytes, body: bytes) -> None:
    headers = (
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: " + cte + b"\r\nSubject: x\r\n"
    )
    out = parsed(relay(simple(headers, body)))
    assert out.get_content_type() == "text/plain"


def test_other_charsets_are_decoded_before_matching() -> None:
    body = "Schrieb alice.smith@example.com: \u00fc".encode("utf-16")
    headers = (
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-16\r\n"
        b"Content-Transfer-Encoding: base64\r\nSubject: x\r\n"
    )
    out = parsed(relay(simple(headers, base64.encodebytes(body))))
    assert ALIAS in out.get_content()


def test_html_with_entities_and_mailto_links() -> None:
    html = (
        b'<a href="mailto:alice.smith%40example.com?subject=hi">&#97;lice.smith&#64;example.com'
        b"</a> <p>alice.smith&commat;example&period;com</p> <p>ALICE.SMITH&#X40;EXAMPLE.COM</p>\r\n"
    )
    headers = b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=us-ascii\r\nSubject: x\r\n"
    out = parsed(relay(simple(headers, html)))
    content = out.get_content()
    assert content.count(ALIAS) == 4
    assert "example.com" not in content


def test_quoted_reply_and_multipart_alternative() -> None:
    body = (
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Thanks!\r\n\r\nOn Mon, Alice Smith <alice.smith@example.com> wrote:\r\n"
        b"> my address is alice.smith@example.com\r\n--b1\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<blockquote>On Mon, &lt;alice.smith@exa=\r\nmple.com&gt; wrote:</blockquote>\r\n"
        b"--b1--\r\nepilogue alice.smith@example.com\r\n"
    )
    headers = (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b1\r\nSubject: x\r\n"
    )
    raw = simple(headers, b"preamble alice.smith@example.com\r\n" + body)
    out = parsed(relay(raw))
    plain, html = out.iter_parts()
    assert "<" + ALIAS + "> wrote:" in plain.get_content()
    assert ALIAS in html.get_content()


def test_nested_message_rfc822_and_attachment_names() -> None:
    inner = (
        b"From: Alice <alice.smith@example.com>\r\nSubject: fwd alice.smith@example.com\r\n"
        b"Content-Type: text/plain\r\n\r\nsent by alice.smith@example.com\r\n"
    )
    body = (
        b"--b2\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--b2\r\n"
        b'Content-Type: application/pdf; name="alice.smith@example.com.pdf"\r\n'
        b"Content-Disposition: attachment;\r\n filename*0*=utf-8''alice.smith%40exa;\r\n"
        b" filename*1*=mple.com%20%C3%A9.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"%PDF-1.4 author Alice")
        + b"--b2\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="=?utf-8?q?alice.smith=40example.com?="\r\n'
        b"\r\nplain bytes\r\n--b2--\r\n"
    )
    headers = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b2\r\nSubject: x\r\n"
    out = parsed(relay(simple(headers, body)))
    forwarded, pdf, other = out.iter_parts()
    assert forwarded.get_content_type() == "message/rfc822"
    assert pdf.get_filename() == ALIAS + " \u00e9.pdf"
    assert pdf.get_content() == b"%PDF-1.4 author Alice"  # untouched: it showed no address
    assert other.get_filename() == ALIAS


def test_a_binary_attachment_holding_the_address_is_refused_naming_the_part() -> None:
    """Rewriting bytes inside a PDF would damage it: refused, with the part named."""
    body = (
        b"--b2\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b2\r\n"
        b'Content-Type: application/pdf; name="invoice.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"%PDF-1.4 author alice.smith@example.com")
        + b"--b2--\r\n"
    )
    headers = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b2\r\n"
    with pytest.raises(RelayRefusal) as caught:
        relay(simple(headers, body))
    assert caught.value.reply == codes.part_refusal(
        codes.ADDRESS_IN_BINARY_PART, "part 2 (application/pdf)"
    )


def test_principal_to_customer_uses_reverse_alias_and_hides_the_principal() -> None:
    raw = (
        b"From: Best Shop <orders@shop.example>\r\nTo: <c-7f3a@relay.test>\r\n"
        b"Received: from shop (198.51.100.7)\r\nX-Mailer: ShopMail\r\nSubject: your order\r\n"
        b"\r\nReply to orders@shop.example\r\n"
    )
    out = rewrite_principal_to_customer(
        parse_message(raw),
        reverse_alias="s-42@relay.test",
        redactions={"orders@shop.example": "s-42@relay.test"},
        relay_domain=DOMAIN,
    )
    assert traces(out, "orders@shop.example") == []
    message = parsed(out)
    assert str(message["From"]) == "Best Shop <s-42@relay.test>"
    assert "Received" not in message and "X-Mailer" not in message
    assert b"198.51.100.7" not in out


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Alice", "Alice"),
        ('"Alice" <evil>', "Alice evil"),
        ("Alice\tSmith  \u202e", "Alice Smith"),
        ("bob@evil.example Alice", "Alice"),
        ("alice.smith&#64;example.com Alice", "Alice"),
        ("x" * 200, "x" * 64),
    ],
)
def test_sanitize_display_name(name: str, expected: str) -> None:
    from mailveil.relay.redact import Redactor

    assert sanitize_display_name(name, Redactor({REAL: ALIAS})) == expected


def test_header_injection_through_an_encoded_display_name_is_refused() -> None:
    raw = (
        b"From: =?utf-8?q?Alice=0D=0ABcc:_victim@example.org?= <alice.smith@example.com>\r\n"
        b"Subject: x\r\n\r\nbody\r\n"
    )
    with pytest.raises(HeaderInjection) as raised:
        relay(raw)
    assert raised.value.reply == codes.HEADER_INJECTION


@pytest.mark.parametrize("breaker", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
def test_a_character_that_ends_a_line_on_output_is_refused_in_any_header(breaker: str) -> None:
    field = f"Content-Disposition: attachment; {breaker}Bcc: victim@example.org\r\n"
    raw = b"From: <alice.smith@example.com>\r\n" + field.encode() + b"Subject: x\r\n\r\nbody\r\n"
    with pytest.raises(HeaderInjection) as raised:
        relay(raw)
    assert raised.value.reply == codes.HEADER_INJECTION


@pytest.mark.parametrize(
    ("raw", "error", "reply"),
    [
        (b"Subject: no from\r\n\r\nbody\r\n", MissingFrom, codes.MISSING_FROM),
        (
            b"From: a@x.example\r\nFrom: b@x.example\r\n\r\nb\r\n",
            DuplicateFrom,
            codes.DUPLICATE_FROM,
        ),
        (
            b"From: a@x.example\r\nSubject: \xff\xfe\r\n\r\nb\r\n",
            HeaderNotUtf8,
            codes.HEADER_NOT_UTF8,
        ),
        (
            b"From: a@x.example\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n\r\nb\r\n",
            MalformedMessage,
            codes.BAD_CONTENT,
        ),
        (
            b"From: a@x.example\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\nno parts\r\n",
            MalformedMessage,
            codes.BAD_CONTENT,
        ),
    ],
)
def test_bad_messages_get_specific_refusals(
    raw: bytes, error: type[RelayRefusal], reply: codes.Reply
) -> None:
    with pytest.raises(error) as raised:
        relay(raw)
    assert raised.value.reply == reply


@pytest.mark.parametrize(
    "header",
    [
        # Found by the fuzz test: text glued to an encoded-word, which decode_header reads.
        b"From: ==?utf-8?b?YWxpY2Uuc21pdGhAZXhhbXBsZS5jb20=?= <alice.smith@example.com>\r\n",
        # Found by the fuzz test: a damaged base64 word the header registry still decodes.
        b"From: a <alice.smith@example.com>\r\n"
        b"Subject: =?utf-8?b?YWxpY2Uuc21pdGhAZXhhbXBsZS5jb20g\x01MOp?=\r\n",
        # An encoded-word whose text is another encoded-word.
        b"From: a <alice.smith@example.com>\r\nSubject: =?utf-8?b?"
        + base64.b64encode(b"=?utf-8?q?alice.smith=40example.com?=")
        + b"?=\r\n",
    ],
)
def test_encoded_words_that_decoders_disagree_on(header: bytes) -> None:
    relay(header + b"To: <shop-1@relay.test>\r\n\r\nbody\r\n")
