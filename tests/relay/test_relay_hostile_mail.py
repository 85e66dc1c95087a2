"""The hostile-mail generator through the real relay on loopback, on SQLite and PostgreSQL:
every shape (``hostile_mail``) sent with smtplib to an alias (as its authenticated seller)
and to the abuse mailbox (as a customer) gets its named reply from ``relay.codes``, within
the client's timeout (a stalled relay fails the test), and nothing is stored that should not
be: refused messages leave no relay_messages row, no delivery and no report; what was taken
is delivered whole, the ledger still verifies and no real address leaked (``open_relay``).

The shapes, counts and worst per-message time are printed (``-s`` shows them); the CPU cost
per message beside the unguarded stdlib parser is ``benchmarks/header_bombs.py``'s.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from hostile_mail import RECEIPT, Shape, head, shapes
from relay_server_kit import SELLER_ADDRESS, Relay
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.detect.models import AbuseReport
from mailveil.ledger.verify import verify_ledger
from mailveil.relay import codes
from mailveil.relay.codes import Reply

MAX_MESSAGE_BYTES = 2 * 1024 * 1024
CLIENT_TIMEOUT = 30.0  # the bound on one message: a relay that stalls fails the test


@pytest.fixture
def relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from kit.logged_relay(
        relay_settings.with_overrides(relay_max_message_bytes=MAX_MESSAGE_BYTES),
        session_factory,
        tmp_path,
        caplog,
    )


def send(relay: Relay, shape: Shape, *, to: str, sender: str, token: str | None) -> str:
    """One transaction; the reply to DATA (or to what refused first) as ``"code text"``."""
    data = shape.message(head(sender, to))
    client = smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.example", timeout=30)
    try:
        client.ehlo()
        if token is not None:
            client.login("anything", token)
        code, text = client.mail(sender)
        assert code == 250, text
        code, text = client.rcpt(to)
        assert code == 250, text
        if shape.wire:  # exact bytes: smtplib.data would mend the line endings
            code, text = client.docmd("DATA")
            assert code == 354, text
            client.send(data + b".\r\n")
            code, text = client.getreply()
        else:
            try:
                code, text = client.data(data)
            except smtplib.SMTPDataError as exc:
                code, text = exc.smtp_code, exc.smtp_error
        return f"{code} {text.decode()}"
    finally:
        client.close()


def matches(got: str, want: Reply) -> bool:
    if want is RECEIPT:  # the receipt carries the report's reference
        return got.startswith(f"{RECEIPT}, thank you (reference ")
    return got == str(want)


@pytest.mark.slow  # ~40 messages of up to 3 MB through the relay, on each backend
def test_every_hostile_shape_gets_its_named_reply_and_nothing_corrupt_is_kept(
    relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    world = relay.world
    alias = world.alias("alice", "acme")
    abuse = f"{relay.settings.abuse_mailbox_local}@{relay.settings.relay_domain}"
    rows: list[tuple[str, str, float]] = []
    taken = {"alias": 0, "abuse": 0}
    for shape in shapes(MAX_MESSAGE_BYTES):
        for where, to, sender, token, want in (
            ("alias", alias, SELLER_ADDRESS, world.keys["acme"], shape.alias_reply),
            ("abuse", abuse, world.real["bob"], None, shape.abuse_reply),
        ):
            started = time.perf_counter()
            got = send(relay, shape, to=to, sender=sender, token=token)
            rows.append((f"{shape.name} -> {where}", got[:60], time.perf_counter() - started))
            assert matches(got, want), (shape.name, where, got)
            taken[where] += want in (codes.QUEUED, RECEIPT)

    # Only what was taken is kept: one delivery per message queued, one report per receipt.
    delivered = relay.delivered()
    assert len(delivered) == taken["alias"]
    for item in delivered:  # whole and readable; the privacy check runs at teardown
        parsed = email.message_from_bytes(item.data, policy=email.policy.default)
        assert parsed["From"] is not None and not parsed.defects
    assert len(relay.relay_messages()) == taken["alias"]
    with relay.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(AbuseReport)) == taken["abuse"]
    refused_at_alias = sum(1 for s in shapes(MAX_MESSAGE_BYTES) if s.alias_reply != codes.QUEUED)
    # The size limit refuses while reading, before a recipient's ledger entry is due.
    assert len(relay.ledger("message_refused")) == refused_at_alias - 1
    relay.server.flush()
    with relay.session_factory() as session:
        report = verify_ledger(
            session.connection(), relay.settings, relay.runtime.ledger.signer.public_key
        )
    assert report.ok and report.entries > 0, report.reason

    worst = max(rows, key=lambda row: row[2])
    with capsys.disabled():
        print(f"\nhostile mail: {len(rows)} messages, {len(rows) // 2} shapes x 2 recipients")
        for name, got, seconds in rows:
            print(f"  {seconds * 1000:8.1f} ms  {name:<58} {got}")
        print(f"  worst per-message time: {worst[2] * 1000:.1f} ms ({worst[0]})")
