"""No innocent principal is accused, through the real relay (aiosmtpd on loopback, smtplib
clients) and the real API: forged senders, DKIM replays, a customer replaying relayed mail,
relayed mail reported in every shape, a lone customer writing to her own alias, and the
warning banner naming a team rather than a person.

In each framing, the innocent seller is ``acme`` (sending address and domain registered,
SPF for 127.0.0.1 only, a DKIM key published); the framer sends from 127.0.0.2.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from framing_kit import (
    ACME_SELECTOR,
    FRAMER_IP,
    NEUTRAL_DOMAIN,
    SHAPES,
    SOFT_DOMAIN,
    accused,
    acme_writes,
    open_framing_relay,
    report_of,
    scan,
    sign,
)
from relay_server_kit import (
    RIVAL_DKIM_SELECTOR,
    RIVAL_DOMAIN,
    SELLER_ADDRESS,
    SELLER_DOMAIN,
    STRANGER_ADDRESS,
    Relay,
    message,
    parsed,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.api.app import create_app
from mailveil.config import Settings
from mailveil.detect.models import AbuseReport, Incident, Signal
from mailveil.relay import codes
from mailveil.relay.compose import BANNER


@pytest.fixture
def relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from open_framing_relay(relay_settings, session_factory, tmp_path, caplog)


def pieces(signal: Signal, role: str) -> list[dict[str, object]]:
    return [p for p in signal.evidence["pieces"] if p["role"] == role]


# ------------------------------------------------------------------ forged and replayed


def _forgery(case: str, alias: str) -> tuple[bytes, str, str]:
    """(message, MAIL FROM, what the claimed piece's reason must say)."""
    to_alias = ["from", "to", "subject", "date"]
    if case == "spf-fail":
        return message(from_=SELLER_ADDRESS, to=alias), SELLER_ADDRESS, "SPF fail"
    if case == "softfail":
        sender = f"offers@{SOFT_DOMAIN}"
        return message(from_=sender, to=alias), sender, "SPF softfail"
    if case == "neutral":
        sender = f"offers@{NEUTRAL_DOMAIN}"
        return message(from_=sender, to=alias), sender, "SPF neutral"
    if case == "null-sender":
        return message(from_=SELLER_ADDRESS, to=alias), "", "SPF none"
    if case == "envelope-elsewhere":
        return message(from_=SELLER_ADDRESS, to=alias), STRANGER_ADDRESS, "not aligned"
    if case == "dkim-unbound":
        data = sign(message(from_=SELLER_ADDRESS, to=alias), SELLER_DOMAIN, ACME_SELECTOR,
                    [b"from", b"subject", b"date"])  # fmt: skip
        return data, STRANGER_ADDRESS, "does not sign To/Cc"
    if case == "dkim-other":
        # acme's genuine mail to someone else, replayed unchanged to the alias.
        data = sign(message(from_=SELLER_ADDRESS, to="customer@elsewhere.example"),
                    SELLER_DOMAIN, ACME_SELECTOR, [h.encode() for h in to_alias])  # fmt: skip
        return data, STRANGER_ADDRESS, "other addresses"
    if case == "dkim-unaligned":
        data = sign(message(from_=SELLER_ADDRESS, to=alias), RIVAL_DOMAIN, RIVAL_DKIM_SELECTOR,
                    [h.encode() for h in to_alias])  # fmt: skip
        return data, STRANGER_ADDRESS, "not aligned"
    if case == "dkim-broken":
        data = sign(message(from_=SELLER_ADDRESS, to=alias), SELLER_DOMAIN, ACME_SELECTOR,
                    [h.encode() for h in to_alias])  # fmt: skip
        return data.replace(b"your parcel", b"cheap watch"), STRANGER_ADDRESS, "fail"
    raise ValueError(case)


FORGERIES = (
    "spf-fail",
    "softfail",
    "neutral",
    "null-sender",
    "envelope-elsewhere",
    "dkim-unbound",
    "dkim-other",
    "dkim-unaligned",
    "dkim-broken",
)


@pytest.mark.parametrize("case", FORGERIES)
def test_a_forged_or_replayed_sender_never_names_the_innocent_seller(
    relay: Relay, case: str
) -> None:
    w = relay.world
    alias = w.alias("alice", "rival")  # whoever leaked it, acme never held it
    innocent = {"softfail": w.principals["soft"].id, "neutral": w.principals["neutral"].id}.get(
        case, w.principals["acme"].id
    )
    data, mail_from, why = _forgery(case, alias)
    code, _text = relay.send(data, mail_from=mail_from, rcpt=alias, source=FRAMER_IP)
    assert code == codes.QUARANTINED.code
    [signal] = scan(relay)
    assert innocent not in accused(relay)
    assert signal.recipient_principal_id is None
    [claimed] = pieces(signal, "recipient")
    assert (claimed["principal_id"], claimed["strength"], claimed["counted"]) == (
        innocent,
        "claimed",
        False,
    )
    assert why in str(claimed["reason"]), claimed["reason"]
    # The alias still names whom it was disclosed to: the leak is real, only the framing fails.
    assert signal.source_principal_id == w.principals["rival"].id


def test_a_display_name_dressed_as_the_seller_names_nobody(relay: Relay) -> None:
    w = relay.world
    alias = w.alias("alice", "rival")
    data = message(from_=f'"{SELLER_ADDRESS}" <{STRANGER_ADDRESS}>', to=alias)
    code, _ = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias, source=FRAMER_IP)
    assert code == codes.QUARANTINED.code
    [signal] = scan(relay)
    # The stranger proved its own domain, which no principal registered; acme appears nowhere.
    [sender] = pieces(signal, "recipient")
    assert (sender["principal_id"], sender["strength"], sender["counted"]) == (
        None,
        "authenticated",
        False,
    )
    assert w.principals["acme"].id not in accused(relay)


def test_a_seller_that_really_wrote_to_another_sellers_alias_is_named(relay: Relay) -> None:
    """The control: acme's own signature, naming the alias it arrived at, binds acme."""
    w = relay.world
    alias = w.alias("alice", "rival")
    data = sign(message(from_=SELLER_ADDRESS, to=alias), SELLER_DOMAIN, ACME_SELECTOR,
                [b"from", b"to", b"subject", b"date"])  # fmt: skip
    code, _ = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias, source=FRAMER_IP)
    assert code == codes.QUARANTINED.code
    [signal] = scan(relay)
    [bound] = pieces(signal, "recipient")
    assert (bound["strength"], bound["basis"], bound["counted"]) == (
        "authenticated",
        "dkim-aligned",
        True,
    )
    assert signal.recipient_principal_id == w.principals["acme"].id


# --------------------------------------------------------------- relayed mail, replayed


def test_a_customer_replaying_relayed_mail_to_her_alias_frames_no_one(relay: Relay) -> None:
    w = relay.world
    alias = w.alias("alice", "acme")
    copy = acme_writes(relay, "alice")
    # The exact bytes, then a copy whose body was changed (the relay's signature breaks, its
    # Message-ID and VERP Return-Path remain).
    for data in (copy, copy.replace(b"your parcel", b"your prize")):
        code, _ = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias, source=FRAMER_IP)
        assert code == codes.QUARANTINED.code
    first, second = relay.ledger("stranger_at_alias")
    assert first["detail"]["relay_copy"]["basis"] == ["message-id", "verp", "relay-dkim"]
    assert second["detail"]["relay_copy"]["basis"] == ["message-id", "verp"]
    assert all(e["detail"]["relay_copy"]["to_this_alias"] for e in (first, second))
    signals = scan(relay)
    assert len(signals) == 2
    for signal in signals:
        [source] = pieces(signal, "source")
        assert (source["strength"], source["basis"], source["counted"]) == (
            "claimed",
            "explained",
            False,
        )
        assert "customer's own copy" in str(source["reason"])
    assert accused(relay) == set()
    with relay.session_factory() as session:
        assert session.scalars(select(Incident)).all() == []


def test_a_copy_of_relayed_mail_sent_to_another_alias_still_counts(relay: Relay) -> None:
    """Whoever holds alice's copy knew bob's alias from somewhere else: bob never got mail
    through it, so only its principal held it."""
    w = relay.world
    copy = acme_writes(relay, "alice")
    alias = w.alias("bob", "acme")
    code, _ = relay.send(copy, mail_from=STRANGER_ADDRESS, rcpt=alias, source=FRAMER_IP)
    assert code == codes.QUARANTINED.code
    [entry] = relay.ledger("stranger_at_alias")
    assert entry["detail"]["relay_copy"]["to_this_alias"] is False
    [signal] = scan(relay)
    assert signal.source_principal_id == w.principals["acme"].id
    assert pieces(signal, "source")[0]["weak"] is False


def test_a_lone_customer_writing_to_her_own_alias_names_no_one_until_a_second_does(
    relay: Relay,
) -> None:
    """alice saw her alias in acme's mail, so fresh mail to it from outside may be hers. A
    second customer's alias written to makes it acme's leak, weakly: two people to contain."""
    w = relay.world
    for customer in ("alice", "carol"):
        acme_writes(relay, customer)
    spam = message(from_=STRANGER_ADDRESS, to=w.alias("alice", "acme"), subject="Deals")
    relay.send(spam, mail_from=STRANGER_ADDRESS, rcpt=w.alias("alice", "acme"), source=FRAMER_IP)
    [waiting] = scan(relay)
    assert waiting.source_principal_id is None and waiting.candidate_source_id is not None
    assert "2 of its customers" in str(pieces(waiting, "source")[0]["reason"])
    assert accused(relay) == set()
    spam = message(from_=STRANGER_ADDRESS, to=w.alias("carol", "acme"), subject="Deals")
    relay.send(spam, mail_from=STRANGER_ADDRESS, rcpt=w.alias("carol", "acme"), source=FRAMER_IP)
    scan(relay)
    with relay.session_factory() as session:
        signals = session.scalars(select(Signal).order_by(Signal.id)).all()
        assert [s.source_principal_id for s in signals] == [w.principals["acme"].id] * 2
        [incident] = session.scalars(select(Incident)).all()
        assert incident.signal_count == 2
    assert accused(relay) == {w.principals["acme"].id}
    kinds = [e["detail"].get("promoted") for e in relay.ledger("signal")]
    assert True in kinds  # the waiting signal's promotion is in the ledger


# ------------------------------------------------------------------ complaints, every shape


def api(relay: Relay) -> TestClient:
    return TestClient(create_app(relay.runtime), raise_server_exceptions=False)


def test_relayed_mail_reported_in_every_shape_is_a_complaint(relay: Relay) -> None:
    w = relay.world
    copy = acme_writes(relay, "alice")
    abuse = f"{relay.settings.abuse_mailbox_local}@{relay.settings.relay_domain}"
    outcomes: dict[str, tuple[str, str]] = {}
    with api(relay) as client:
        for shape in SHAPES:
            raw = report_of(shape, copy, reporter=w.real["alice"], abuse=abuse)
            code, _ = relay.send(raw, mail_from=w.real["alice"], rcpt=abuse)
            assert code == codes.REPORT_RECEIVED.code, shape
            relay.server.flush()
            answer = client.post(
                "/v1/reports",
                params={"customer_id": w.customers["alice"].id},
                content=raw,
                headers={
                    "Authorization": f"Bearer {w.keys['admin']}",
                    "Content-Type": "message/rfc822",
                },
            )
            assert answer.status_code == 202, answer.text
    with relay.session_factory() as session:
        rows = session.scalars(select(AbuseReport).order_by(AbuseReport.id)).all()
        for shape, (mailbox, upload) in zip(SHAPES, zip(rows[::2], rows[1::2], strict=True),
                                             strict=True):  # fmt: skip
            outcomes[shape] = (mailbox.outcome, upload.outcome)
            assert mailbox.verified and upload.verified, (shape, mailbox.verification)
            if mailbox.outcome == "complaint":
                assert mailbox.facts["complaint_about"] == f"principal:{w.principals['acme'].id}"
    expected = {s: ("complaint", "complaint") for s in SHAPES}
    expected["body-only"] = ("no_original", "no_original")
    assert outcomes == expected
    scan(relay)
    assert accused(relay) == set()


# ------------------------------------------------------------------------------- banner


@pytest.fixture
def banner_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from open_framing_relay(
        relay_settings, session_factory, tmp_path, caplog, relay_stranger_action="banner"
    )


def test_the_banner_names_the_employees_team_never_the_person(banner_relay: Relay) -> None:
    relay = banner_relay
    w = relay.world
    alias = w.alias("alice", "agent")
    code, _ = relay.send(
        message(from_=STRANGER_ADDRESS, to=alias, subject="Offer"),
        mail_from=STRANGER_ADDRESS,
        rcpt=alias,
    )
    assert code == codes.QUEUED.code
    [got] = relay.delivered()
    out = parsed(got.data)
    body = out.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    text = body.get_content()
    name = f"the support team of {relay.settings.controller_name}"
    assert text.startswith(BANNER.format(name=name))
    assert "Support Agent" not in got.data.decode("utf-8", "replace")
    assert out.as_bytes(policy=email.policy.SMTP)
