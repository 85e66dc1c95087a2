"""The pre-scan (relay/prescan.py): each limit refuses with its own reply before the parser
runs, at the limit a message passes, and the scan sees the structure the parser sees."""

from __future__ import annotations

import email.policy
import importlib.util
from email.message import EmailMessage, Message, MIMEPart
from pathlib import Path

import pytest
from hostile_mail import (
    encoded_words,
    head,
    header_flood,
    nested_multiparts,
    params_over_parts,
    part_flood,
    received_chain,
    rfc2231_content_type,
    rfc2231_disposition,
    rfc2231_in_attached_message,
    rfc2231_in_delivery_status,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_kit import hostile_messages
from mailveil.detect.intake import parse_report
from mailveil.detect.intake_model import Reason
from mailveil.relay import codes
from mailveil.relay.codes import Reply
from mailveil.relay.errors import RelayRefusal
from mailveil.relay.parse import parse_message, walk_with_depth
from mailveil.relay.prescan import Limits, refusal_for, scan
from testpaths import shared_dir

HEAD = head("a@sender.example", "c-1@relay.example")


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (rfc2231_content_type(100), codes.TOO_MANY_PARAMETERS),  # with charset: 101
        (rfc2231_disposition(2000), codes.TOO_MANY_PARAMETERS),
        (rfc2231_in_attached_message(2000), codes.TOO_MANY_PARAMETERS),
        (rfc2231_in_delivery_status(2000), codes.TOO_MANY_PARAMETERS),
        (params_over_parts(12, 60), codes.TOO_MANY_PARAMETERS_IN_ALL),
        (encoded_words(257), codes.TOO_MANY_ENCODED_WORDS),
        (received_chain(101), codes.TOO_MANY_RECEIVED),
        (header_flood(600), codes.TOO_MANY_HEADERS),
        (part_flood(400, 20), codes.TOO_MANY_HEADERS_IN_ALL),
        (part_flood(600), codes.TOO_MANY_PARTS),
        (nested_multiparts(21), codes.MIME_TOO_DEEP),
    ],
    ids=[
        "params",
        "disposition",
        "attached-message",
        "delivery-status",
        "params-in-all",
        "encoded-words",
        "received",
        "headers",
        "headers-in-all",
        "parts",
        "depth",
    ],
)
def test_each_limit_has_its_reply_before_the_parser(body: bytes, reply: Reply) -> None:
    raw = HEAD + body
    assert refusal_for(raw) == reply
    with pytest.raises(RelayRefusal) as raised:
        parse_message(raw)
    assert raised.value.reply == reply


@pytest.mark.parametrize(
    "body",
    [
        rfc2231_content_type(99),  # with charset: 100
        params_over_parts(8, 60),
        encoded_words(256),
        received_chain(100),
        nested_multiparts(20),
        part_flood(499),
    ],
    ids=["params", "params-in-all", "encoded-words", "received", "depth", "parts"],
)
def test_at_the_limit_a_message_passes(body: bytes) -> None:
    assert refusal_for(HEAD + body) is None


def test_the_abuse_intake_names_the_same_shapes() -> None:
    for body, reason in (
        (rfc2231_content_type(2000), Reason.HEADERS_TOO_COMPLEX),
        (received_chain(400), Reason.HEADERS_TOO_COMPLEX),
        (nested_multiparts(200), Reason.MIME_TOO_DEEP),
    ):
        result = parse_report(HEAD + body)
        assert (result.outcome, result.reason) == ("rejected", reason)


def test_lines_that_only_look_like_delimiters_are_body_text() -> None:
    # "--n0" in a text part is not a boundary of any open multipart: nothing nests.
    text = b"Content-Type: text/plain\r\n\r\n" + b"--n0\r\n--b\r\n-- \r\n" * 100
    assert scan(HEAD + text).max_depth == 0
    # Sibling multiparts left open are closed by their parent's next delimiter.
    child = b"--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nx\r\n"
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=o\r\n\r\n" + child * 30 + b"--o--\r\n"
    tally = scan(raw)
    assert (tally.max_depth, tally.sections) == (2, 61)
    assert parse_message(raw).is_multipart()


def test_an_unreadable_multipart_type_is_malformed_not_a_crash() -> None:
    raw = b'Content-Type: multipart/m\x80\xc2\x80ixed; boundary="b0"\r\n\r\npreamble\r\n'
    assert refusal_for(raw) == codes.BAD_CONTENT  # found by the fuzzer: a UnicodeEncodeError


def test_headers_only_stops_at_the_first_section() -> None:
    raw = HEAD + b"\r\n" + received_chain(400)
    assert scan(raw, headers_only=True).sections == 1
    assert refusal_for(raw) is None  # a Received chain in a text body is text


def corpus() -> list[Path]:
    found = sorted((shared_dir() / "vectors" / "arf-parsedmarc").glob("*.eml"))
    spec = importlib.util.find_spec("test.test_email")
    if spec is not None and spec.origin is not None:
        found += sorted((Path(spec.origin).parent / "data").glob("msg_*.txt"))
    return found


def test_real_messages_are_not_refused() -> None:
    files = corpus()
    assert files
    refused = {path.name: refusal_for(path.read_bytes()) for path in files}
    assert {name: reply for name, reply in refused.items() if reply is not None} == {}


@settings(max_examples=300, deadline=2000)
@given(st.binary(max_size=3000) | hostile_messages)
def test_the_scan_refuses_by_name_or_passes_and_never_raises_anything_else(raw: bytes) -> None:
    try:
        scan(raw)
    except RelayRefusal as exc:
        assert exc.reply.text.startswith(("5.3.4", "5.4.6")) or exc.reply == codes.BAD_CONTENT


# ------------------------------------------------------- the scan sees what the parser sees

leaf_types = st.sampled_from(["text/plain", "text/html", "application/pdf"])


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> MIMEPart:
    """A random MIME tree: leaves, multiparts and attached messages, up to 6 levels."""
    kind = draw(st.sampled_from(["leaf", "multi", "message"] if depth < 6 else ["leaf"]))
    part = MIMEPart(policy=email.policy.SMTP)
    if kind == "leaf":
        ctype = draw(leaf_types)
        part.set_content(b"x" * draw(st.integers(0, 40)), *ctype.split("/"))
        part["Content-Disposition"] = "attachment; filename*=utf-8''caf%C3%A9.pdf; size=3"
        if draw(st.booleans()):
            part["Received"] = "from a by b; Tue, 01 Oct 2024 10:00:00 +0200"
        return part
    if kind == "message":
        inner = EmailMessage(policy=email.policy.SMTP)
        inner["Subject"] = "=?utf-8?q?inner_w=C3=B6rd?="
        child = draw(trees(depth + 1))
        for name, value in child.items():
            inner[name] = value
        inner.set_payload(child.get_payload())
        part.set_content(inner)
        return part
    part.make_mixed()
    for _ in range(draw(st.integers(1, 3))):
        part.attach(draw(trees(depth + 1)))
    return part


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_scan_counts_the_parts_and_levels_the_parser_builds(tree: MIMEPart) -> None:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "a@sender.example"
    for name, value in tree.items():
        message[name] = value
    message.set_payload(tree.get_payload())
    raw = message.as_bytes()
    tally = scan(raw, Limits(max_mime_depth=100, max_parts=10_000))
    parsed = parse_message(raw, Limits(max_mime_depth=100, max_parts=10_000))
    walked = list(walk_with_depth(parsed))
    assert tally.sections == len(walked)
    assert tally.max_depth == multipart_levels(parsed)


def multipart_levels(part: Message) -> int:
    """The most multipart boundaries open at once under ``part`` (attached messages add none)."""
    children = part.get_payload() if part.is_multipart() else []
    below = max((multipart_levels(c) for c in children if isinstance(c, Message)), default=0)
    return below + (part.get_content_maintype() == "multipart")
