"""Hypothesis over the relay's parsers of hostile input (``fuzz_kit``'s grammar, mutated):

* parsing and rewriting raise nothing but a ``RelayRefusal`` with a reply from the catalogue;
  what they write hides the real address everywhere, passes the relay's own parser again, and
  rewriting it a second time changes nothing (idempotent);
* the pre-scan and the parser agree: what the pre-scan lets through the parser never refuses
  for a structural limit the pre-scan checks;
* a delivery report, however noisy, gives back the status, action and recipient it was
  written with, and its diagnostic made safe for the other side names no real address.

Each example is bounded in size by the grammar and in time by a deadline (generous: the
suite shares the machine); a slow example is a failure, not a skip.
"""

from __future__ import annotations

import re
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relay_testkit import traces

from fuzz_kit import REAL, hostile_messages, message, mutated
from mailveil.relay import codes
from mailveil.relay.bounce_notice import safe_diagnostic
from mailveil.relay.dsn import KIND_HARD, KIND_SOFT, KINDS, parse_dsn
from mailveil.relay.errors import (
    HeaderTooComplex,
    MimeTooDeep,
    RelayRefusal,
    TooManyHeaders,
    TooManyParts,
)
from mailveil.relay.parse import parse_message
from mailveil.relay.prescan import refusal_for
from mailveil.relay.rewrite import rewrite_customer_to_principal

ALIAS = "c-7f3a9k@relay.example"
MESSAGE_ID = "<fixed@relay.example>"
CATALOGUE = {value for value in vars(codes).values() if isinstance(value, codes.Reply)}
pytestmark = pytest.mark.slow  # hundreds of examples: in make test, not make test-fast
FUZZ = settings(
    max_examples=150,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _rewrite(raw: bytes) -> bytes:
    parsed = parse_message(raw)
    return rewrite_customer_to_principal(
        parsed,
        customer_alias=ALIAS,
        redactions={REAL.lower(): ALIAS},
        relay_domain="relay.example",
        message_id=MESSAGE_ID,
    )


def _blank_tails(data: bytes) -> bytes:
    """``data`` with runs of blanks as one space and none at line ends."""
    return re.sub(rb" \r\n", b"\r\n", re.sub(rb"[ \t]+", b" ", data))


def _named(exc: RelayRefusal) -> bool:
    """A refusal's reply is one of the catalogue's, or a part refusal built from one."""
    return exc.reply in CATALOGUE or any(
        reply.text.split("{part}")[0] == exc.reply.text[: len(reply.text.split("{part}")[0])]
        and reply.code == exc.reply.code
        for reply in CATALOGUE
        if "{part}" in reply.text
    )


@FUZZ
@given(hostile_messages)
def test_rewriting_hostile_mail_refuses_by_name_or_hides_the_address(raw: bytes) -> None:
    try:
        out = _rewrite(raw)
    except RelayRefusal as exc:  # the typed refusal, with its reply: nothing else may escape
        assert _named(exc), exc.reply
        return
    assert traces(out, REAL) == []
    again = parse_message(out)  # the relay's output passes the relay's own parser
    assert again["From"] is not None and ALIAS in str(again["From"])
    # Idempotent: a second pass finds nothing left to change but blanks (an emptied field
    # may come back as "Name: " instead of "Name:", a control character made a space may
    # leave two spaces where a second pass leaves one).
    assert _blank_tails(_rewrite(out)) == _blank_tails(out)


@FUZZ
@given(hostile_messages)
def test_what_the_prescan_passes_the_parser_does_not_refuse_for_its_limits(raw: bytes) -> None:
    if refusal_for(raw) is not None:
        return
    try:
        parse_message(raw)
    except (HeaderTooComplex, TooManyParts, TooManyHeaders) as exc:
        raise AssertionError(f"the pre-scan let through what the parser refused: {exc}") from exc
    except MimeTooDeep:
        pass  # attached-message levels are counted once parsed (the pre-scan counts multiparts)
    except RelayRefusal:
        pass  # content refusals (8-bit headers, malformed MIME) are the parser's to make


# ----------------------------------------------------------------------------- delivery reports

statuses = st.builds(
    lambda c, s, d: f"{c}.{s}.{d}", st.sampled_from("245"), st.integers(0, 7), st.integers(0, 9)
)
actions = st.sampled_from(["failed", "delayed", "delivered", "relayed", "expanded"])
noise = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).filter(
    lambda t: ":" not in t
)


@st.composite
def delivery_reports(draw: st.DrawFn) -> tuple[bytes, str, str, str]:
    status, action = draw(statuses), draw(actions)
    recipient = draw(st.sampled_from([REAL, REAL.upper(), "x.y@other.example"]))
    diagnostic = draw(
        st.sampled_from(
            [
                f"smtp; 550 5.1.1 <{recipient}>: Recipient address rejected",
                f"smtp; {status[0]}50 {status} {recipient}... {draw(noise)}",
                f"X-Postfix; host mx.private-mailbox.example[192.0.2.7] said: {recipient}",
            ]
        )
    )
    human = draw(noise)
    returned = draw(st.one_of(st.just(b""), message()))
    raw = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        "To: bounce+tok@relay.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        f"--R\r\nContent-Type: text/plain\r\n\r\n{human}\r\n"
        "--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n\r\n"
    ).encode()
    if returned:
        raw += b"--R\r\nContent-Type: message/rfc822\r\n\r\n" + returned
    return raw + b"--R--\r\n", status, action, recipient


@FUZZ
@given(delivery_reports())
def test_a_report_gives_back_what_it_was_written_with(
    report: tuple[bytes, str, str, str],
) -> None:
    raw, status, action, recipient = report
    dsn = parse_dsn(raw)
    assert (dsn.status, dsn.action) == (status, action)
    assert [r.recipient for r in dsn.recipients] == [recipient]
    if action == "failed":
        assert dsn.kind == (KIND_HARD if status[0] == "5" else KIND_SOFT)
    safe = safe_diagnostic(dsn.diagnostic, {recipient.lower(): ALIAS}, "relay.example")
    assert recipient.lower() not in safe.lower() and "private-mailbox" not in safe.lower()


@FUZZ
@given(mutated(delivery_reports().map(lambda r: r[0])))
def test_a_mutated_report_is_read_or_unknown_and_never_leaks(raw: bytes) -> None:
    dsn = parse_dsn(raw)
    assert dsn.kind in KINDS
    for text in (dsn.diagnostic, *(r.diagnostic for r in dsn.recipients)):
        safe = safe_diagnostic(text, {REAL.lower(): ALIAS}, "relay.example")
        assert REAL.lower() not in safe.lower()


def test_the_grammar_reaches_the_shapes_it_is_for() -> None:
    """The fuzzers above are only as good as what they draw: multiparts, attached messages,
    encoded-words and broken encodings all occur, and most messages get through."""
    seen: dict[str, int] = {}

    @settings(max_examples=200, deadline=None, database=None)
    @given(hostile_messages)
    def draw(raw: bytes) -> None:
        for marker, name in (
            (b"multipart/", "multipart"),
            (b"message/rfc822", "attached message"),
            (b"=?utf-8?", "encoded-word"),
            (b"x-bogus", "unknown encoding"),
            (b"*0*=", "rfc2231"),
        ):
            seen[name] = seen.get(name, 0) + (marker in raw)
        try:
            parsed = parse_message(raw)
        except RelayRefusal:
            return
        seen["parsed"] = seen.get("parsed", 0) + isinstance(parsed, EmailMessage)

    draw()
    assert all(seen.get(k, 0) >= 5 for k in ("multipart", "attached message", "encoded-word")), seen
    assert seen.get("parsed", 0) >= 40, seen
