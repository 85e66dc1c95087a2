"""Hypothesis over the abuse-report intake (``parse_report``), with ``fuzz_kit``'s hostile
grammar:

* whatever the bytes, an outcome and never an exception; the outcome, reason, detail and
  original agree with each other; detail and notes (which go to logs) quote nothing of the
  report, so no address;
* forwarding is transparent: a spam forwarded as an attachment, once or twice, and however
  hostile its own structure, is found with its own Message-ID, sender and recipient (a spam
  holding an attached message of its own is a forward in all but name, so the spam's tree
  here has none).

Each example is bounded in size by the grammar and in time by the intake's own budget and a
deadline (generous: the suite shares the machine).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_kit import REAL, hostile_messages, mime_part, mutated
from mailveil.detect.intake import parse_report
from mailveil.detect.intake_model import DETAILS, Reason

ALIAS = "alias-7f3k@relay.example"
pytestmark = pytest.mark.slow  # hundreds of examples: in make test, not make test-fast
FUZZ = settings(
    max_examples=150,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def forward(inner: bytes, level: int) -> bytes:
    mark = f"fwd{level}".encode()
    return (
        f"From: Reporter <{REAL}>\r\nTo: report-abuse@relay.example\r\n".encode()
        + b"Subject: Fwd: spam\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=" + mark + b"\r\n\r\n"
        b"--" + mark + b"\r\nContent-Type: text/plain\r\n\r\nspam to my alias\r\n"
        b"--" + mark + b"\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n"
        b"--" + mark + b"--\r\n"
    )


@FUZZ
@given(st.one_of(hostile_messages, mutated(hostile_messages.map(lambda m: forward(m, 0)))))
def test_any_report_gets_a_consistent_outcome_that_quotes_nothing(raw: bytes) -> None:
    result = parse_report(raw)
    assert result.reason in Reason and result.detail == DETAILS[result.reason]
    assert (result.outcome == "found") == (result.reason == Reason.FOUND)
    assert (result.original is not None) == (result.outcome == "found")
    if result.outcome == "no_original":
        assert result.reason == Reason.NO_ORIGINAL
    for text in (result.detail, *result.notes):
        assert "@" not in text and "private-mailbox" not in text.lower()


@FUZZ
@given(mime_part(messages=False), st.integers(1, 2), st.integers(0, 10**6))
def test_a_forwarded_spam_is_found_with_its_own_identity(
    structure: bytes, times: int, n: int
) -> None:
    message_id = f"<spam-{n}@spam.example>"
    spam = (
        "Received: from mx.spam.example ([198.51.100.7]) by mx.home.example; "
        "Tue, 07 Jan 2025 10:15:00 +0000\r\n"
        f"From: King <king@spam.example>\r\nTo: {ALIAS}\r\nMessage-ID: {message_id}\r\n"
        "Subject: Cheap\r\nDate: Tue, 07 Jan 2025 10:15:00 +0000\r\nMIME-Version: 1.0\r\n"
    ).encode() + structure
    report = spam
    for level in range(times):
        report = forward(report, level)
    result = parse_report(report)
    assert result.outcome == "found", (result.reason, result.notes)
    original = result.original
    assert original is not None and result.depth == times
    assert original.message_id == message_id
    assert original.sender is not None and original.sender.address == "king@spam.example"
    # The generated part may bring To fields of its own (it did: "To: 0@0"); the alias comes
    # first, and anything after it only when the part added a To field.
    head = structure.split(b"\r\n\r\n", 1)[0]
    added_to = re.search(rb"(?im)^to[ \t]*:", head) is not None
    assert original.to[0] == ALIAS and (original.to == (ALIAS,) or added_to), original.to
