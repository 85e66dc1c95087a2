"""Bounce handling: a report to a VERP address marks its message, counts hard bounces per
recipient, is a ledger event, and becomes a notice to the sender that never names the other
side -- also when the report quotes the whole original with the real address in every header
and encoding. Both backends; the notice goes out through real Postfix into the sink."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TypeVar

import pytest
from postfix_harness import Smarthost
from relay_testkit import traces
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.customers import change_customer_address, create_customer
from mailveil.contacts.models import Alias
from mailveil.contacts.principals import create_principal
from mailveil.db.base import utcnow
from mailveil.demo.harness import free_port
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.signing import init_signing_key
from mailveil.relay import codes
from mailveil.relay.bounces import (
    RESULT_BAD_TOKEN,
    RESULT_DUPLICATE,
    RESULT_IGNORED,
    RESULT_RECORDED,
    RESULT_UNKNOWN_MESSAGE,
    BounceOutcome,
    bounce_mark,
    clear_bounces,
    is_bouncing,
    read_bounce,
    record_bounce,
    safe_diagnostic,
    take_bounce,
)
from mailveil.relay.delivery import Smarthost as SmarthostClient
from mailveil.relay.delivery import SmarthostConfig
from mailveil.relay.messages import (
    DIRECTION_TO_CUSTOMER,
    DIRECTION_TO_PRINCIPAL,
    init_verp_key,
    load_verp_key,
    new_token,
    verp_address,
)
from mailveil.relay.models import RelayMessage
from mailveil.relay.routes import lookup_route
from mailveil.runtime import Runtime
from mailveil.vault import init_keys

DOMAIN = "relay.mailveil.localhost"
CUSTOMER_REAL = "jane.buyer@home-mail.example"
SELLER_REAL = "orders@acme-shop.example"
T = TypeVar("T")


@pytest.fixture
def bounce_runtime(settings: Settings, session_factory: sessionmaker[Session]) -> Runtime:
    init_keys(settings)
    init_signing_key(settings)
    init_verp_key(settings)
    engine = session_factory.kw["bind"].engine
    return Runtime.open(settings, engine=engine, session_factory=session_factory)


@dataclass
class Pair:
    customer_id: int
    principal_id: int
    alias: str
    reverse_alias: str


@pytest.fixture
def pair(session: Session, bounce_runtime: Runtime) -> Pair:
    n = uuid.uuid4().hex[:8]
    customer = create_customer(
        session, bounce_runtime.vault, external_id=f"c-{n}", email=CUSTOMER_REAL, country="DE"
    )
    seller = create_principal(
        session,
        kind="seller",
        external_id=f"s-{n}",
        display_name="ACME",
        attributes={"sending_addresses": [SELLER_REAL]},
    )
    alias = Alias(
        customer_id=customer.id,
        principal_id=seller.id,
        address=f"acme.{n}@{DOMAIN}",
        reverse_address=f"acme-shop.{n}@{DOMAIN}",
    )
    session.add(alias)
    session.commit()
    return Pair(customer.id, seller.id, alias.address, alias.reverse_address)


def _message(session: Session, pair: Pair, direction: str = DIRECTION_TO_CUSTOMER) -> RelayMessage:
    token = new_token()
    row = RelayMessage(
        token=token,
        direction=direction,
        principal_id=pair.principal_id,
        customer_id=pair.customer_id,
        alias=pair.alias,
        reason="shipping",
        message_id=f"<{token}@{DOMAIN}>",
        size=2000,
        sha256="0" * 64,
        status="delivered",
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return row


def _local(runtime: Runtime, token: str) -> str:
    return verp_address(load_verp_key(runtime.settings), token, DOMAIN).partition("@")[0]


def _leaky_report(real: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    """A report that names ``real`` everywhere a real MTA might, and then some."""
    local, _, domain = real.partition("@")
    b64 = base64.b64encode(f"Hi, this is {real}; write to {real.upper()}".encode()).decode()
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.{domain}>\n"
        f"To: bounce+x@{DOMAIN}\nSubject: Undelivered Mail Returned to Sender ({real})\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\n"
        f"<{real}>: host mx.{domain}[192.0.2.25] said: {status[0]}50 {status} <{real}>:\n"
        "    Recipient address rejected\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.{domain}\n\n"
        f"Final-Recipient: rfc822; {real}\nOriginal-Recipient: rfc822;{real}\n"
        f"Action: {action}\nStatus: {status}\nRemote-MTA: dns; mx.{domain} [2001:db8::25]\n"
        f"Diagnostic-Code: smtp; {status[0]}50 {status} <{real}>... user {local} unknown at\n"
        f"    mx.{domain}[192.0.2.25]; mailto:{real.replace('@', '%40')} or "
        f"{real.replace('@', '&#64;')} (also postmaster@{domain}, boss@elsewhere.example)\n"
        "--B\nContent-Type: message/rfc822\n\n"
        f"Received: from relay by mx.{domain} for <{real}>\n"
        f"To: =?utf-8?b?{base64.b64encode(real.encode()).decode()}?=\n"
        f"Delivered-To: {real}\nSubject: order\nContent-Transfer-Encoding: base64\n\n{b64}\n"
        "--B--\n"
    )
    return text.replace("\n", "\r\n").encode()


def _body(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return " ".join(str(message.get_content()).split())


def _ledger_text(session: Session) -> str:
    return "\n".join(session.scalars(select(LedgerEntry.leaf)).all())


def _read_and_record(
    session: Session, runtime: Runtime, token: str, message: bytes
) -> BounceOutcome:
    """take_bounce's two halves in the caller's session, the notice built but not sent (so
    not notified): what is read and written, apart from the smarthost."""
    read = read_bounce(session, runtime, token, message)
    if isinstance(read, BounceOutcome):
        return read
    return record_bounce(session, runtime, read, notified=False)


def _bounce_events(session: Session) -> list[LedgerEntry]:
    return list(session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "bounce")).all())


def test_hard_bounce_to_customer(session: Session, bounce_runtime: Runtime, pair: Pair) -> None:
    row = _message(session, pair)
    outcome = _read_and_record(
        session, bounce_runtime, _local(bounce_runtime, row.token), _leaky_report(CUSTOMER_REAL)
    )
    session.commit()
    assert (outcome.result, outcome.kind, outcome.status) == (RESULT_RECORDED, "hard", "5.1.1")
    assert outcome.reply == codes.REPLY_OK
    assert (outcome.hard_bounces, outcome.marked) == (1, False)
    session.refresh(row)
    assert (row.status, row.status_code) == ("bounced", "5.1.1")

    notice = outcome.notice
    assert notice is not None
    assert notice.rcpt == SELLER_REAL  # the sender's own address
    assert notice.mail_from == ""
    assert traces(notice.data, CUSTOMER_REAL) == []
    for piece in (b"jane.buyer", b"home-mail.example", b"192.0.2.25", b"2001:db8", b"elsewhere"):
        assert piece not in notice.data.lower(), piece
    body = _body(notice.data)
    assert f"Your message to {pair.alias} could not be delivered" in body
    assert "Status: 5.1.1 (the mailbox does not exist)" in body
    assert "The receiving system said: 550 5.1.1" in body
    text = notice.data.decode()
    assert "Auto-Submitted: auto-replied" in text
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    assert repr(outcome).count(CUSTOMER_REAL) == 0

    (event,) = _bounce_events(session)
    assert event.subject == f"customer:{pair.customer_id}"
    assert event.alias == pair.alias
    assert CUSTOMER_REAL not in _ledger_text(session)
    assert "home-mail" not in _ledger_text(session)


def test_hard_bounces_mark_the_customer(
    session: Session, bounce_runtime: Runtime, pair: Pair
) -> None:
    limit = bounce_runtime.settings.relay_hard_bounce_limit
    outcomes = []
    for _ in range(limit):
        row = _message(session, pair)
        local = _local(bounce_runtime, row.token)
        outcomes.append(
            _read_and_record(session, bounce_runtime, local, _leaky_report(CUSTOMER_REAL))
        )
        session.commit()
    assert [o.hard_bounces for o in outcomes] == list(range(1, limit + 1))
    assert [o.marked for o in outcomes] == [False] * (limit - 1) + [True]
    assert is_bouncing(session, customer_id=pair.customer_id)
    assert not is_bouncing(session, principal_id=pair.principal_id)
    last = outcomes[-1].notice
    assert last is not None and "marked as not receiving mail" in _body(last.data)

    # The same report again (the reporting MTA retried): counted once, told again.
    again = _read_and_record(session, bounce_runtime, local, _leaky_report(CUSTOMER_REAL))
    session.commit()
    assert (again.result, again.hard_bounces, again.marked) == (RESULT_DUPLICATE, 0, False)
    assert again.notice is not None
    mark = bounce_mark(session, customer_id=pair.customer_id)
    assert mark is not None and mark.hard_bounces == limit and mark.last_status == "5.1.1"

    assert clear_bounces(session, customer_id=pair.customer_id)
    assert not is_bouncing(session, customer_id=pair.customer_id)


def test_a_new_address_clears_the_customers_bounce_marks(
    session: Session, bounce_runtime: Runtime, pair: Pair
) -> None:
    vault = bounce_runtime.vault
    for direction, real in (
        (DIRECTION_TO_CUSTOMER, CUSTOMER_REAL),
        (DIRECTION_TO_PRINCIPAL, SELLER_REAL),
    ):
        for _ in range(bounce_runtime.settings.relay_hard_bounce_limit):
            row = _message(session, pair, direction)
            local = _local(bounce_runtime, row.token)
            _read_and_record(session, bounce_runtime, local, _leaky_report(real))
            session.commit()
    route = lookup_route(session, pair.alias)
    assert route is not None and route.customer_bouncing and route.principal_bouncing

    # The same address sealed again is not a new one: its bounces stand.
    change_customer_address(session, vault, pair.customer_id, CUSTOMER_REAL.upper())
    session.commit()
    assert is_bouncing(session, customer_id=pair.customer_id)

    change_customer_address(session, vault, pair.customer_id, "jane@new-home.example")
    session.commit()
    assert bounce_mark(session, customer_id=pair.customer_id) is None
    route = lookup_route(session, pair.alias)
    assert route is not None and not route.customer_bouncing
    # The principal's marks are the principal's: untouched.
    assert route.principal_bouncing and is_bouncing(session, principal_id=pair.principal_id)


def test_reply_bounce_tells_the_customer_without_the_seller_address(
    session: Session, bounce_runtime: Runtime, pair: Pair
) -> None:
    row = _message(session, pair, DIRECTION_TO_PRINCIPAL)
    outcome = _read_and_record(
        session, bounce_runtime, _local(bounce_runtime, row.token), _leaky_report(SELLER_REAL)
    )
    session.commit()
    assert outcome.result == RESULT_RECORDED
    assert outcome.notice is not None
    assert outcome.notice.rcpt == CUSTOMER_REAL
    assert traces(outcome.notice.data, SELLER_REAL) == []
    assert b"acme-shop.example" not in outcome.notice.data
    assert f"Your message to {pair.reverse_alias}" in _body(outcome.notice.data)
    assert is_bouncing(session, principal_id=pair.principal_id) is False
    mark = bounce_mark(session, principal_id=pair.principal_id)
    assert mark is not None and mark.hard_bounces == 1
    assert bounce_mark(session, customer_id=pair.customer_id) is None
    assert SELLER_REAL not in _ledger_text(session)


def test_delay_and_soft_failure_are_not_counted(
    session: Session, bounce_runtime: Runtime, pair: Pair
) -> None:
    row = _message(session, pair)
    local = _local(bounce_runtime, row.token)
    delayed = _read_and_record(
        session, bounce_runtime, local, _leaky_report(CUSTOMER_REAL, "4.4.1", "delayed")
    )
    session.commit()
    session.refresh(row)
    assert (delayed.result, delayed.kind, row.status) == (RESULT_RECORDED, "delayed", "delivered")
    assert delayed.notice is not None and "has not been delivered yet" in _body(delayed.notice.data)
    assert b"Subject: Delayed: your message to" in delayed.notice.data

    expired = _read_and_record(
        session, bounce_runtime, local, _leaky_report(CUSTOMER_REAL, "4.4.7", "failed")
    )
    session.commit()
    session.refresh(row)
    assert (expired.kind, row.status, row.status_code) == ("soft", "bounced", "4.4.7")
    assert expired.hard_bounces == 0
    assert bounce_mark(session, customer_id=pair.customer_id) is None
    assert len(_bounce_events(session)) == 2


@pytest.mark.parametrize(
    "report",
    [
        b"From: buyer@example.org\r\nSubject: Automatic reply: hello\r\n"
        b"Auto-Submitted: auto-replied\r\n\r\nI am away.\r\n",
        b"\x00\xff garbage",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; a@b\r\nAction: delivered\r\nStatus: 2.0.0\r\n--B--\r\n",
    ],
    ids=["autoreply", "garbage", "success"],
)
def test_non_failures_are_recorded_only(
    session: Session, bounce_runtime: Runtime, pair: Pair, report: bytes
) -> None:
    row = _message(session, pair)
    outcome = _read_and_record(session, bounce_runtime, _local(bounce_runtime, row.token), report)
    session.commit()
    session.refresh(row)
    assert (outcome.result, outcome.notice, row.status) == (RESULT_IGNORED, None, "delivered")
    assert outcome.reply == codes.REPLY_OK
    assert len(_bounce_events(session)) == 1


def test_forged_or_foreign_addresses_are_refused(
    session: Session, bounce_runtime: Runtime, pair: Pair
) -> None:
    row = _message(session, pair)
    local = _local(bounce_runtime, row.token)
    forged = local[:-1] + ("a" if local[-1] != "a" else "b")
    for bad in (forged, f"bounce+{row.token}", "postmaster", "", "bounce+"):
        outcome = _read_and_record(session, bounce_runtime, bad, _leaky_report(CUSTOMER_REAL))
        assert (outcome.result, outcome.reply) == (RESULT_BAD_TOKEN, codes.BAD_DESTINATION)
        assert not outcome.accepted
    assert _bounce_events(session) == []
    # The bare token is what the handler passes once its RCPT check verified the tag.
    outcome = _read_and_record(session, bounce_runtime, row.token, b"garbage")
    assert outcome.result == RESULT_IGNORED
    # The whole address, in angle brackets, is as good as the local part.
    outcome = _read_and_record(
        session, bounce_runtime, f"<{local}@{DOMAIN}>", _leaky_report(CUSTOMER_REAL)
    )
    assert outcome.result == RESULT_RECORDED


def test_valid_token_without_its_message(session: Session, bounce_runtime: Runtime) -> None:
    outcome = _read_and_record(
        session, bounce_runtime, _local(bounce_runtime, new_token()), _leaky_report(CUSTOMER_REAL)
    )
    assert (outcome.result, outcome.reply, outcome.notice) == (
        RESULT_UNKNOWN_MESSAGE,
        codes.REPLY_OK,
        None,
    )
    (event,) = _bounce_events(session)
    assert CUSTOMER_REAL not in event.leaf


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"550 5.1.1 <{CUSTOMER_REAL}>: unknown", "550 5.1.1 <a@relay", CUSTOMER_REAL),
        ("mailto:jane.buyer%40home-mail.example", "mailto:a@relay", "jane.buyer"),
        ("jane.buyer&#x40;HOME-MAIL.example said no", "said no", "jane.buyer"),
        ("user jane.buyer unknown", "user [recipient] unknown", "jane.buyer"),
        ("mx1.home-mail.example refused", "[recipient domain] refused", "home-mail"),
        ("host mx.x.example[192.0.2.1] said: 550 no", "550 no", "192.0.2.1"),
        ("via 2001:db8::1 at 12:30:45", "at 12:30:45", "2001:db8"),
        ("forwarded to other@private.example", "forwarded to [address]", "other@"),
        (f"{'x' * 290} {CUSTOMER_REAL} tail", "...", "jane"),
    ],
)
def test_safe_diagnostic(text: str, kept: str, gone: str) -> None:
    out = safe_diagnostic(text, {CUSTOMER_REAL: f"a@{DOMAIN}"}, DOMAIN)
    assert kept in out
    assert gone.lower() not in out.lower()
    assert len(out) <= 310


class _Runner:
    """Blocking session work in a thread, committed: what journal.Database does."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def _call(self, fn: Callable[[Session], T], commit: bool) -> T:
        with self.factory() as session:
            result = fn(session)
            if commit:
                session.commit()
            return result

    async def run(self, fn: Callable[[Session], T], *, commit: bool = False) -> T:
        return await asyncio.to_thread(self._call, fn, commit)


def _client(settings: Settings, port: int) -> SmarthostClient:
    base = SmarthostConfig.from_settings(settings)
    return SmarthostClient(
        SmarthostConfig(**{**base.__dict__, "host": "127.0.0.1", "port": port, "timeout": 5.0})
    )


def test_notice_through_postfix_from_a_real_postfix_bounce(
    session: Session,
    session_factory: sessionmaker[Session],
    bounce_runtime: Runtime,
    pair: Pair,
    postfix_smarthost: Smarthost,
) -> None:
    """Postfix bounces a message for the customer's real address (the sink refuses it); the
    report goes through take_bounce and the notice through Postfix into the sink."""
    sink = postfix_smarthost.sink
    sink.refuse_rcpt = lambda rcpt: (
        f"550 5.1.1 <{rcpt}>: Recipient address rejected" if rcpt == CUSTOMER_REAL else None
    )
    row = _message(session, pair)
    verp = verp_address(load_verp_key(bounce_runtime.settings), row.token, DOMAIN)
    client = _client(bounce_runtime.settings, postfix_smarthost.port)
    original = (
        f"From: ACME <{pair.reverse_alias}>\r\nTo: {pair.alias}\r\nSubject: your parcel\r\n"
        f"Message-ID: {row.message_id}\r\n\r\nDear customer at {CUSTOMER_REAL}\r\n"
    ).encode()

    async def scenario() -> None:
        await client.send(verp, CUSTOMER_REAL, original)
        (report,) = [m for m in await asyncio.to_thread(sink.wait_count, 1) if verp in m.rcpt_tos]
        outcome = await take_bounce(
            _Runner(session_factory), bounce_runtime, client, verp, report.data
        )
        assert (outcome.result, outcome.reply, outcome.notified) == (
            RESULT_RECORDED,
            codes.REPLY_OK,
            True,
        )
        await client.close()

    asyncio.run(scenario())
    notices = sink.wait_for(lambda got: any(SELLER_REAL in m.rcpt_tos for m in got))
    (notice,) = [m for m in notices if SELLER_REAL in m.rcpt_tos]
    assert notice.mail_from == "<>"
    assert traces(notice.data, CUSTOMER_REAL) == []
    assert f"Your message to {pair.alias}" in _body(notice.data)
    session.expire_all()
    assert session.get(RelayMessage, row.id).status == "bounced"  # type: ignore[union-attr]


def test_smarthost_down_asks_the_reporter_to_retry(
    session: Session,
    session_factory: sessionmaker[Session],
    bounce_runtime: Runtime,
    pair: Pair,
) -> None:
    row = _message(session, pair)
    local = _local(bounce_runtime, row.token)
    client = _client(bounce_runtime.settings, free_port())  # nothing listens there

    async def scenario() -> None:
        outcome = await take_bounce(
            _Runner(session_factory), bounce_runtime, client, local, _leaky_report(CUSTOMER_REAL)
        )
        assert outcome.reply.code == 451 and not outcome.notified
        assert outcome.reply == codes.SMARTHOST_UNREACHABLE
        await client.close()

    asyncio.run(scenario())


def test_the_notice_is_sent_before_the_bounce_is_written(
    session: Session,
    session_factory: sessionmaker[Session],
    bounce_runtime: Runtime,
    pair: Pair,
    postfix_smarthost: Smarthost,
) -> None:
    """As the handler calls it (bare token): the notice goes through the smarthost pool,
    then the bounce is written, saying the sender was told."""
    row = _message(session, pair)
    client = _client(bounce_runtime.settings, postfix_smarthost.port)

    async def scenario() -> BounceOutcome:
        try:
            return await take_bounce(
                _Runner(session_factory), bounce_runtime, client, row.token,
                _leaky_report(CUSTOMER_REAL),
            )  # fmt: skip
        finally:
            await client.close()

    outcome = asyncio.run(scenario())
    assert (outcome.result, outcome.notified) == (RESULT_RECORDED, True)
    sink = postfix_smarthost.sink
    (notice,) = sink.wait_for(lambda got: any(SELLER_REAL in m.rcpt_tos for m in got))
    assert traces(notice.data, CUSTOMER_REAL) == []
    session.expire_all()
    (event,) = _bounce_events(session)
    assert '"notified":true' in event.leaf.replace(" ", "")


def test_with_the_smarthost_down_nothing_is_written(
    session: Session,
    session_factory: sessionmaker[Session],
    bounce_runtime: Runtime,
    pair: Pair,
) -> None:
    row = _message(session, pair)
    client = _client(bounce_runtime.settings, free_port())  # nothing listens there

    async def scenario() -> BounceOutcome:
        try:
            return await take_bounce(
                _Runner(session_factory), bounce_runtime, client, row.token,
                _leaky_report(CUSTOMER_REAL),
            )  # fmt: skip
        finally:
            await client.close()

    outcome = asyncio.run(scenario())
    assert outcome.reply == codes.SMARTHOST_UNREACHABLE and not outcome.notified
    assert CUSTOMER_REAL not in repr(outcome)
    session.expire_all()
    assert _bounce_events(session) == []
    assert session.scalar(select(RelayMessage.status).where(RelayMessage.id == row.id)) == (
        "delivered"
    )
    assert bounce_mark(session, customer_id=pair.customer_id) is None
