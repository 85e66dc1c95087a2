"""A hostile-mail generator: every shape a sender can use to make a mail parser slow, deep,
confused or wrong, as exact bytes (CRLF lines, not dot-stuffed).

Plain functions without test dependencies, so the suite (``test_relay_hostile_mail``) and
benchmarks (``benchmarks/header_bombs.py``) build the same messages. Each ``Shape`` names the
reply the relay must give at an alias (``alias_reply``) and at the abuse mailbox
(``abuse_reply``; ``RECEIPT`` where the report is taken and the intake judges it).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass

from mailveil.relay import codes
from mailveil.relay.codes import Reply

CRLF = b"\r\n"
# The abuse mailbox's receipt: a report is taken (the intake records why it was not read).
RECEIPT = Reply(250, "2.0.0 Report received")


def head(from_: str, to: str, subject: str = "[shipping] Parcel") -> bytes:
    return (
        f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Tue, 01 Oct 2024 10:00:00 +0200\r\nMessage-ID: <hostile@client.example>\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()


def nested_multiparts(levels: int) -> bytes:
    """``levels`` multipart/mixed parts, each the only child of the one outside it."""
    inner = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nleaf\r\n"
    for level in range(levels):
        b = b"n%d" % level
        inner = (
            (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + CRLF + inner)
            + b"--"
            + b
            + b"--\r\n"
        )
    return inner


def nested_messages(levels: int) -> bytes:
    """A message/rfc822 inside a message/rfc822 ... ``levels`` deep."""
    inner = b"Subject: innermost\r\n\r\nhi\r\n"
    for _ in range(levels):
        inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    return inner


def part_flood(parts: int, part_headers: int = 1) -> bytes:
    fields = b"".join(b"X-Part-Field-%d: v\r\n" % i for i in range(part_headers - 1))
    one = b"--p\r\nContent-Type: text/plain\r\n" + fields + b"\r\npart\r\n"
    return b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + one * parts + b"--p--\r\n"


def header_flood(fields: int) -> bytes:
    return b"".join(b"X-Flood-%d: v\r\n" % i for i in range(fields)) + b"\r\nbody\r\n"


def rfc2231_params(count: int, name: str = "name") -> bytes:
    """``count`` RFC 2231 continuation segments of one parameter, each on its own line."""
    return b"".join(b";\r\n " + f"{name}*{i}*=utf-8''{'%41' * 20}".encode() for i in range(count))


def rfc2231_content_type(count: int) -> bytes:
    return b"Content-Type: text/plain; charset=utf-8" + rfc2231_params(count) + b"\r\n\r\nhi\r\n"


def rfc2231_disposition(count: int) -> bytes:
    attachment = (
        b"--a\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment" + rfc2231_params(count, "filename") + b"\r\n\r\n"
        b"JVBERi0xLjQK\r\n"
    )
    return (
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        b"--a\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" + attachment + b"--a--\r\n"
    )


def params_over_parts(parts: int, per_part: int) -> bytes:
    """``parts`` attachments, each with ``per_part`` file-name segments (under the per-field
    limit, over the per-message one together)."""
    one = (
        b"--a\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment" + rfc2231_params(per_part, "filename") + b"\r\n\r\n"
        b"JVBERi0xLjQK\r\n"
    )
    return b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + one * parts + b"--a--\r\n"


def rfc2231_in_attached_message(count: int) -> bytes:
    inner = b"From: x@inner.example\r\nSubject: inner\r\n" + rfc2231_content_type(count)
    return (
        b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n"
        b"--m\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--m--\r\n"
    )


def rfc2231_in_delivery_status(count: int) -> bytes:
    block = b"Reporting-MTA: dns; mx.example" + rfc2231_params(count) + b"\r\n"
    return (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n"
        b"--r\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n" + block + b"\r\n"
        b"Final-Recipient: rfc822; x@y.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--r--\r\n"
    )


def encoded_words(count: int) -> bytes:
    words = b"\r\n ".join(b"=?utf-8?q?w=C3=B6rd?=" for _ in range(count))
    return b"Content-Description: " + words + b"\r\n\r\nbody\r\n"  # a field the relay keeps


def received_chain(count: int) -> bytes:
    hop = (
        "Received: from h{i}.example (h{i}.example [192.0.2.1]) by mx{i}.example with ESMTP "
        "id {i}; Tue, 01 Oct 2024 10:00:00 +0200\r\n"
    )
    return "".join(hop.format(i=i) for i in range(count)).encode() + b"\r\nbody\r\n"


def transfer_encoded(cte: str, body: bytes) -> bytes:
    return (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
        + body
    )


def attachment(size: int, seed: int = 1) -> bytes:
    data = b"%PDF-1.4\n" + random.Random(seed).randbytes(size)  # a PDF by its magic
    encoded = base64.encodebytes(data).replace(b"\n", CRLF)
    return (
        b"Content-Type: multipart/mixed; boundary=z\r\n\r\n"
        b"--z\r\nContent-Type: text/plain\r\n\r\nthe file\r\n"
        b"--z\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="big.pdf"\r\n\r\n' + encoded + b"--z--\r\n"
    )


@dataclass(frozen=True)
class Shape:
    name: str
    body: Callable[[], bytes]  # what follows the head: more header fields, then the body
    alias_reply: Reply
    abuse_reply: Reply
    wire: bool = False  # send these exact bytes (no client line-ending fix-ups)

    def message(self, head_bytes: bytes) -> bytes:
        return head_bytes + self.body()


def both(reply: Reply) -> dict[str, Reply]:
    return {"alias_reply": reply, "abuse_reply": reply}


def shapes(max_message_bytes: int) -> list[Shape]:
    """Every shape, sized well past its limit (and a few just inside, which must pass)."""
    return [
        Shape(
            "deep nesting, 60 multiparts",
            lambda: nested_multiparts(60),
            **both(codes.MIME_TOO_DEEP),
        ),
        Shape(
            "nesting at the limit, 19 multiparts",
            lambda: nested_multiparts(19),
            codes.QUEUED,
            RECEIPT,
        ),
        Shape("message/rfc822 40 deep", lambda: nested_messages(40), codes.MIME_TOO_DEEP, RECEIPT),
        Shape("part flood, 5,000 parts", lambda: part_flood(5000), **both(codes.TOO_MANY_PARTS)),
        Shape(
            "header flood, 5,000 fields", lambda: header_flood(5000), **both(codes.TOO_MANY_HEADERS)
        ),
        Shape(
            "header flood over parts, 400 x 20",
            lambda: part_flood(400, 20),
            **both(codes.TOO_MANY_HEADERS_IN_ALL),
        ),
        Shape(
            "RFC 2231 bomb, 2,000 params in Content-Type",
            lambda: rfc2231_content_type(2000),
            **both(codes.TOO_MANY_PARAMETERS),
        ),
        Shape(
            "RFC 2231 params at the limit, 99",
            lambda: rfc2231_content_type(99),
            codes.QUEUED,
            RECEIPT,
        ),
        Shape(
            "RFC 2231 bomb in Content-Disposition",
            lambda: rfc2231_disposition(2000),
            **both(codes.TOO_MANY_PARAMETERS),
        ),
        Shape(
            "RFC 2231 params over parts, 12 x 60",
            lambda: params_over_parts(12, 60),
            **both(codes.TOO_MANY_PARAMETERS_IN_ALL),
        ),
        Shape(
            "RFC 2231 bomb in an attached message",
            lambda: rfc2231_in_attached_message(2000),
            **both(codes.TOO_MANY_PARAMETERS),
        ),
        Shape(
            "RFC 2231 bomb in a delivery-status block",
            lambda: rfc2231_in_delivery_status(2000),
            **both(codes.TOO_MANY_PARAMETERS),
        ),
        Shape(
            "encoded-word bomb, 5,000 words",
            lambda: encoded_words(5000),
            **both(codes.TOO_MANY_ENCODED_WORDS),
        ),
        Shape(
            "Received chain, 400 hops", lambda: received_chain(400), **both(codes.TOO_MANY_RECEIVED)
        ),
        Shape(
            "broken base64",
            lambda: transfer_encoded("base64", b"@@ not base64 !!\r\n====\r\nQUJD\r\n"),
            codes.QUEUED,
            RECEIPT,
        ),
        Shape(
            "broken quoted-printable",
            lambda: transfer_encoded("quoted-printable", b"=ZZ caf=E9 =\r\n=4\r\n"),
            codes.QUEUED,
            RECEIPT,
        ),
        Shape(
            "unknown transfer encoding",
            lambda: transfer_encoded("x-bogus", b"begin 644 f\r\n`\r\nend\r\n"),
            codes.QUEUED,
            RECEIPT,
        ),
        Shape(
            "8-bit header, not UTF-8",
            lambda: b"X-Note: caf\xe9\r\n\r\nbody\r\n",
            codes.HEADER_NOT_UTF8,
            RECEIPT,
        ),
        Shape(
            "large attachment within the size limit",  # scanned off the event loop
            lambda: attachment(max_message_bytes // 2),
            codes.QUEUED,
            RECEIPT,
        ),
        Shape(
            "huge attachment, over the size limit",
            lambda: attachment(max_message_bytes),
            **both(codes.MESSAGE_TOO_BIG),
        ),
        Shape(
            "smuggled end of data (bare LF)",
            lambda: b"\r\nhi\r\n\n.\r\nMAIL FROM:<x@smuggled.example>\r\n",
            **both(codes.BARE_LF),
            wire=True,
        ),
        Shape("NUL in data", lambda: b"\r\nhi\x00there\r\n", **both(codes.NUL_IN_DATA), wire=True),
    ]


__all__ = ["RECEIPT", "Shape", "head", "shapes"]
