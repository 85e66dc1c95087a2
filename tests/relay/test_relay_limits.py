"""Limits on what the parser will take, each with its own refusal and reply."""

from __future__ import annotations

import pytest

from mailveil.relay import codes
from mailveil.relay.errors import (
    HeaderLineTooLong,
    HeaderSectionTooBig,
    MessageTooBig,
    MimeTooDeep,
    RelayRefusal,
    TooManyHeaders,
    TooManyParts,
)
from mailveil.relay.parse import Limits, parse_message


def nested(levels: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for level in range(levels):
        boundary = f"b{level}".encode()
        inner = (
            b"Content-Type: multipart/mixed; boundary="
            + boundary
            + b"\r\n\r\n--"
            + boundary
            + b"\r\n"
            + inner
            + b"--"
            + boundary
            + b"--\r\n"
        )
    return b"From: a@x.test\r\n" + inner


def many_parts(count: int) -> bytes:
    parts = b"".join(b"--q\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(count))
    return (
        b"From: a@x.test\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n"
        + parts
        + b"--q--\r\n"
    )


def forwarded(levels: int) -> bytes:
    inner = b"From: z@x.test\r\n\r\nbody\r\n"
    for _ in range(levels):
        inner = b"From: z@x.test\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    return inner


@pytest.mark.parametrize(
    ("raw", "limits", "error", "reply"),
    [
        (
            b"From: a@x.test\r\n\r\n" + b"x" * 2000,
            Limits(max_message_bytes=1000),
            MessageTooBig,
            codes.MESSAGE_TOO_BIG,
        ),
        (
            b"From: a@x.test\r\n" + b"X-A: 1\r\n" * 5000 + b"\r\nb\r\n",
            Limits(),
            TooManyHeaders,
            codes.TOO_MANY_HEADERS,
        ),
        (
            b"From: a@x.test\r\nSubject: " + b"s" * 5000 + b"\r\n\r\nb\r\n",
            Limits(),
            HeaderLineTooLong,
            codes.HEADER_LINE_TOO_LONG,
        ),
        (
            b"From: a@x.test\r\n" + b"X-A: " + b"a\r\n  " * 100_000 + b"\r\n\r\nb\r\n",
            Limits(),
            HeaderSectionTooBig,
            codes.HEADER_SECTION_TOO_BIG,
        ),
        (nested(30), Limits(), MimeTooDeep, codes.MIME_TOO_DEEP),
        (nested(5000), Limits(max_parts=10_000), MimeTooDeep, codes.MIME_TOO_DEEP),
        (nested(5000), Limits(), TooManyParts, codes.TOO_MANY_PARTS),
        (forwarded(40), Limits(), MimeTooDeep, codes.MIME_TOO_DEEP),
        (many_parts(600), Limits(), TooManyParts, codes.TOO_MANY_PARTS),
    ],
    ids=[
        "size",
        "header-count",
        "header-line",
        "header-section",
        "depth",
        "parser-depth",
        "containers",
        "rfc822-depth",
        "parts",
    ],
)
def test_limit_refusals(
    raw: bytes, limits: Limits, error: type[RelayRefusal], reply: codes.Reply
) -> None:
    with pytest.raises(error) as raised:
        parse_message(raw, limits)
    assert raised.value.reply == reply


def test_within_limits_parses() -> None:
    assert parse_message(nested(10)).is_multipart()
    assert len(list(parse_message(many_parts(400)).iter_parts())) == 400
