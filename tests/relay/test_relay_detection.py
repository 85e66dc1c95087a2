"""Leak detection through the relay over real SMTP: a stranger at an alias in each delivery
mode, mail to a canary's own address, and reports to the abuse mailbox -- each through to the
signal the ledger scan files.

Every relay fixture checks, when the test ends, that no delivered message leaks a real
address to the other side, that no customer's address is in the ledger and that none was
logged (``relay_server_kit``).
"""

from __future__ import annotations

import email.policy
import re
import stat
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import (
    DKIM_DOMAIN,
    RIVAL_ADDRESS,
    RIVAL_DKIM_SELECTOR,
    RIVAL_DOMAIN,
    STRANGER_ADDRESS,
    Relay,
    customer_dkim_sign,
    dkim_sign,
    message,
    parsed,
    plant_canary,
    verify_dkim,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.access.canaries import disclose_canaries, plant
from mailveil.config import Settings
from mailveil.contacts.models import Principal
from mailveil.contacts.principals import update_principal
from mailveil.detect.models import AbuseReport, Signal
from mailveil.detect.scan import scan_ledger
from mailveil.relay import codes, quarantine
from mailveil.relay.compose import BANNER
from mailveil.relay.messages import verify_bounce_local

RIVAL_OFFERS = f"offers@{RIVAL_DOMAIN}"
RIVAL_BOUNCES = f"bounces@{RIVAL_DOMAIN}"


@pytest.fixture
def banner_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from kit.logged_relay(
        relay_settings, session_factory, tmp_path, caplog, relay_stranger_action="banner"
    )


def said(code: int, text: str) -> str:
    return f"{code} {text}"


def register_rival_domain(relay: Relay) -> None:
    """The seller "rival" registers its mail domain (as sellers who send from their own
    servers do): the scan can then name it from the DKIM d= of its mail."""
    with relay.session_factory() as session:
        update_principal(
            session,
            relay.world.principals["rival"].id,
            attributes={"sending_addresses": [RIVAL_ADDRESS], "sending_domains": [RIVAL_DOMAIN]},
        )
        session.commit()


def rival_spam(alias: str, **kw: str) -> bytes:
    """Rival's catalogue to a customer it bought: DKIM-signed by rival's domain, naming
    rival's real address in the body (which must never reach the customer)."""
    kw.setdefault("body", f"Huge discounts this week. Questions? Write to {RIVAL_ADDRESS}.\n")
    data = message(from_=f"Rival Deals <{RIVAL_OFFERS}>", to=alias, subject="Catalogue", **kw)
    return dkim_sign(data, RIVAL_DOMAIN, RIVAL_DKIM_SELECTOR)


def scan(relay: Relay) -> list[Signal]:
    relay.server.flush()
    with relay.session_factory() as session:
        scan_ledger(session, relay.runtime.ledger)
        session.commit()
        return list(session.scalars(select(Signal).order_by(Signal.id)))


def piece(signal: Signal, role: str) -> dict[str, object]:
    [found] = [p for p in signal.evidence["pieces"] if p["role"] == role]
    assert isinstance(found, dict)
    return found


def assert_names_acme_and_rival(relay: Relay, signal: Signal, basis: set[str]) -> None:
    w = relay.world
    assert signal.kind == "stranger_at_alias"
    assert signal.confidence == "exact"
    assert signal.source_principal_id == w.principals["acme"].id  # whom it was disclosed to
    assert signal.recipient_principal_id == w.principals["rival"].id  # who was found holding it
    assert signal.customer_id == w.customers["alice"].id
    assert signal.alias == w.alias("alice", "acme")
    # The alias was never shown to alice (acme never wrote to her): a strong relay record.
    source = piece(signal, "source")
    assert (source["strength"], source["basis"], source["counted"], source["weak"]) == (
        "relay-record",
        "alias-disclosure",
        True,
        False,
    )
    recipient = piece(signal, "recipient")
    assert (recipient["strength"], recipient["counted"]) == ("authenticated", True)
    assert recipient["basis"] in basis
    assert (signal.source_strength, signal.recipient_strength) == ("relay-record", "authenticated")


def quarantine_files(relay: Relay) -> list[Path]:
    folder = quarantine.folder(relay.settings.data_dir)
    return sorted(folder.iterdir()) if folder.exists() else []


# -------------------------------------------------------------- a stranger at an alias


def test_quarantine_holds_a_strangers_message_and_the_scan_names_both_sides(relay: Relay) -> None:
    register_rival_domain(relay)
    alias = relay.world.alias("alice", "acme")
    data = rival_spam(alias)
    code, text = relay.send(data, mail_from=RIVAL_BOUNCES, rcpt=alias)
    assert said(code, text) == str(codes.QUARANTINED)
    assert relay.delivered() == []
    [entry] = relay.ledger("stranger_at_alias")
    detail = entry["detail"]
    assert detail["action"] == "quarantine"
    assert detail["reply"] == "250 2.7.0"
    assert (detail["envelope_from"], detail["header_from"]) == (RIVAL_BOUNCES, RIVAL_OFFERS)
    assert (detail["spf"], detail["dmarc"], detail["from_domain"]) == ("pass", "none", RIVAL_DOMAIN)
    assert detail["spf_aligned"] is True
    # Aligned with From, and its signed To: names the alias the mail arrived at.
    assert detail["dkim"] == [
        {"d": RIVAL_DOMAIN, "s": RIVAL_DKIM_SELECTOR, "result": "pass", "aligned": True,
         "covers": "rcpt"}
    ]  # fmt: skip
    assert "relay_copy" not in detail
    [held] = quarantine_files(relay)
    assert held.name == detail["sha256"]
    assert held.read_bytes() == data  # byte for byte as it arrived
    assert detail["size"] == len(data)
    assert stat.S_IMODE(held.stat().st_mode) == 0o600
    assert stat.S_IMODE(held.parent.stat().st_mode) == 0o700
    [signal] = scan(relay)
    assert_names_acme_and_rival(relay, signal, {"spf-aligned", "dkim-aligned"})


def test_the_same_message_twice_is_one_file_and_two_entries(relay: Relay) -> None:
    alias = relay.world.alias("alice", "acme")
    data = message(from_=STRANGER_ADDRESS, to=alias, subject="Catalogue")
    for _ in range(2):
        code, text = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias)
        assert said(code, text) == str(codes.QUARANTINED)
    assert len(quarantine_files(relay)) == 1
    assert len(relay.ledger("stranger_at_alias")) == 2


def test_a_client_authenticated_as_another_principal_is_held_too(relay: Relay) -> None:
    """Accepted at RCPT, decided at DATA; its From proves nothing (AUTH says who it is)."""
    w = relay.world
    alias = w.alias("alice", "acme")
    data = message(from_=kit.SELLER_ADDRESS, to=alias, subject="[shipping] Parcel")
    code, text = relay.send(data, mail_from=RIVAL_ADDRESS, rcpt=alias, token=w.keys["rival"])
    assert said(code, text) == str(codes.QUARANTINED)
    assert relay.delivered() == []
    [entry] = relay.ledger("stranger_at_alias")
    assert entry["actor"] == f"principal:{w.principals['rival'].id}"
    assert entry["detail"]["authenticated_principal"] == entry["actor"]
    [signal] = scan(relay)
    assert_names_acme_and_rival(relay, signal, {"smtp-auth"})


def test_refuse_mode_refuses_with_550_and_still_signals(refusing_relay: Relay) -> None:
    relay = refusing_relay
    register_rival_domain(relay)
    alias = relay.world.alias("alice", "acme")
    code, text = relay.send(rival_spam(alias), mail_from=RIVAL_BOUNCES, rcpt=alias)
    assert said(code, text) == str(codes.NOT_AUTHORIZED)
    assert relay.delivered() == []
    assert quarantine_files(relay) == []
    [entry] = relay.ledger("stranger_at_alias")
    assert entry["detail"]["action"] == "refuse"
    assert "sha256" not in entry["detail"]
    [signal] = scan(relay)
    assert_names_acme_and_rival(relay, signal, {"spf-aligned", "dkim-aligned"})


def test_banner_mode_delivers_rewritten_with_the_warning_and_no_leak(banner_relay: Relay) -> None:
    relay = banner_relay
    w = relay.world
    register_rival_domain(relay)
    alias = w.alias("alice", "acme")
    code, text = relay.send(rival_spam(alias), mail_from=RIVAL_BOUNCES, rcpt=alias)
    assert said(code, text) == str(codes.QUEUED)
    [got] = relay.delivered()
    assert got.rcpt_tos == (w.real["alice"],)
    local, _, domain = got.mail_from.partition("@")
    assert domain == relay.settings.relay_domain
    token = verify_bounce_local(relay.verp_key, local)
    assert token is not None
    out = parsed(got.data)
    sender = out["From"].addresses[0]
    # As acme's own messages: From is acme's reverse alias (the stranger's name kept).
    assert sender.addr_spec == w.reverse("alice", "acme")
    assert sender.display_name == "Rival Deals"
    body = out.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert content.startswith(BANNER.format(name="Acme Books"))
    assert "Huge discounts" in content
    assert RIVAL_ADDRESS not in content and RIVAL_DOMAIN not in got.data.decode()
    assert all(verify_dkim(got.data, relay.server.ctx.dkim))
    [entry] = relay.ledger("stranger_at_alias")
    assert entry["detail"]["action"] == "banner"
    assert entry["detail"]["relay_message"] == token
    [sent] = relay.ledger("message")
    assert sent["detail"]["relay_message"] == token
    assert (sent["actor"], sent["detail"]["stranger"]) == (None, True)
    assert quarantine_files(relay) == []
    [signal] = scan(relay)
    assert_names_acme_and_rival(relay, signal, {"spf-aligned", "dkim-aligned"})


def test_banner_in_html_parts_is_escaped(banner_relay: Relay) -> None:
    relay = banner_relay
    w = relay.world
    with relay.session_factory() as session:
        update_principal(session, w.principals["acme"].id, display_name="Acme & <Sons>")
        session.commit()
    alias = w.alias("alice", "acme")
    msg = EmailMessage()
    msg["From"] = STRANGER_ADDRESS
    msg["To"] = alias
    msg["Subject"] = "Offer"
    msg.set_content("plain offer\n")
    msg.add_alternative("<html><body><p>html offer</p></body></html>\n", subtype="html")
    data = msg.as_bytes(policy=email.policy.SMTP)
    code, text = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias)
    assert said(code, text) == str(codes.QUEUED)
    [got] = relay.delivered()
    out = parsed(got.data)
    plain, html_part = out.get_body(("plain",)), out.get_body(("html",))
    assert plain is not None and html_part is not None
    assert plain.get_content().startswith(BANNER.format(name="Acme & <Sons>"))
    html = html_part.get_content()
    assert "Acme &amp; &lt;Sons&gt;" in html and "<Sons>" not in html
    assert re.search(r"<body>\s*<p [^>]*>Warning: this message", html)
    assert html.index("Warning") < html.index("html offer")


def test_banner_mode_holds_what_it_may_not_deliver(banner_relay: Relay) -> None:
    """A canary's alias is evidence, not a mailbox: held, with the reason."""
    relay = banner_relay
    w = relay.world
    with relay.session_factory() as session:
        [canary] = plant(
            session,
            settings=relay.settings,
            vault=relay.runtime.vault,
            ledger=relay.runtime.ledger,
            principal_id=w.principals["agent"].id,
            country="DE",
            count=1,
        )
        agent = session.get(Principal, w.principals["agent"].id)
        assert agent is not None
        aliases = disclose_canaries(
            session,
            settings=relay.settings,
            ledger=relay.runtime.ledger,
            principal=agent,
            canaries=[canary],
            purpose="support",
            actor="test",
        )
        session.commit()
    alias = aliases[canary.id][0]
    data = message(from_=STRANGER_ADDRESS, to=alias, subject="Catalogue")
    code, text = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias)
    assert said(code, text) == str(codes.QUARANTINED)
    assert relay.delivered() == []
    [entry] = relay.ledger("stranger_at_alias")
    assert (entry["detail"]["action"], entry["detail"]["fallback"]) == ("quarantine", "canary")
    [signal] = scan(relay)
    assert (signal.kind, signal.source_principal_id) == ("canary_hit", w.principals["agent"].id)


# ------------------------------------------------------------------- canaries' own addresses


def test_mail_to_a_canarys_own_address_is_held_and_names_its_principal(relay: Relay) -> None:
    w = relay.world
    register_rival_domain(relay)
    canary_id, real = plant_canary(relay)
    assert real.endswith("@" + relay.settings.canary_domain)
    data = rival_spam(real)
    code, text = relay.send(data, mail_from=RIVAL_BOUNCES, rcpt=real)
    # A plain acceptance: the sender must not learn the address is a trap.
    assert said(code, text) == str(codes.QUEUED)
    assert relay.delivered() == []
    [entry] = relay.ledger("canary_hit")
    assert entry["subject"] == f"customer:{canary_id}"
    detail = entry["detail"]
    assert detail["principal"] == f"principal:{w.principals['agent'].id}"
    assert (detail["envelope_from"], detail["header_from"]) == (RIVAL_BOUNCES, RIVAL_OFFERS)
    assert (detail["client_ip"], detail["helo"]) == ("127.0.0.1", kit.CLIENT_HELO)
    assert detail["spf"] == "pass" and detail["from_domain"] == RIVAL_DOMAIN
    assert detail["dkim"] == [
        {"d": RIVAL_DOMAIN, "s": RIVAL_DKIM_SELECTOR, "result": "pass", "aligned": True,
         "covers": "rcpt"}
    ]  # fmt: skip
    assert real.lower() not in entry["leaf"].lower()
    [held] = quarantine_files(relay)
    assert held.name == detail["sha256"] and held.read_bytes() == data
    [signal] = scan(relay)
    assert (signal.kind, signal.confidence) == ("canary_hit", "exact")
    assert signal.source_principal_id == w.principals["agent"].id
    assert signal.recipient_principal_id == w.principals["rival"].id
    assert signal.customer_id == canary_id
    assert (piece(signal, "source")["basis"], piece(signal, "source")["weak"]) == ("canary", False)
    assert piece(signal, "recipient")["strength"] == "authenticated"


def test_unknown_addresses_on_the_canary_domain_are_refused_at_rcpt(relay: Relay) -> None:
    _canary_id, real = plant_canary(relay)
    other = "not-a-canary@" + relay.settings.canary_domain
    with relay.client() as client:
        client.mail(STRANGER_ADDRESS)
        code, text = client.rcpt(other)
        assert said(code, text.decode()) == str(codes.BAD_DESTINATION)
        code, text = client.rcpt(real.upper())  # addresses compare case-blind
        assert said(code, text.decode()) == str(codes.RECIPIENT_OK)
    # A real customer's address is not on the canary domain: that is relaying.
    code, text = relay.send(
        message(from_=STRANGER_ADDRESS, to="x"),
        mail_from=STRANGER_ADDRESS,
        rcpt=relay.world.real["alice"],
    )
    assert said(code, text) == str(codes.RELAY_DENIED)
    assert relay.ledger("canary_hit") == []


# ---------------------------------------------------------------------- the abuse mailbox


def abuse_address(relay: Relay) -> str:
    return f"{relay.settings.abuse_mailbox_local}@{relay.settings.relay_domain}"


def spam_to(alias: str) -> EmailMessage:
    spam = EmailMessage()
    spam["From"] = f"Watches <{STRANGER_ADDRESS}>"
    spam["To"] = alias
    spam["Subject"] = "Cheap watches"
    spam["Date"] = "Tue, 01 Oct 2024 09:00:00 +0000"
    spam["Message-ID"] = "<spam-1@stranger.example>"
    spam.set_content("Buy now.\n")
    return spam


def attached_report(reporter: str, to: str, original: EmailMessage) -> bytes:
    report = EmailMessage()
    report["From"] = reporter
    report["To"] = to
    report["Subject"] = "Fwd: Cheap watches"
    report["Date"] = "Tue, 01 Oct 2024 10:00:00 +0000"
    report["Message-ID"] = "<report-1@client.example>"
    report.set_content("I never gave this shop my address.\n")
    report.add_attachment(original)
    return report.as_bytes(policy=email.policy.SMTP)


def report_id(relay: Relay, code: int, text: str) -> int:
    assert code == codes.REPORT_RECEIVED.code
    match = re.fullmatch(r"2\.0\.0 Report received, thank you \(reference R-(\d+)\)", text)
    assert match is not None, text
    assert said(code, text) == str(codes.report_received(int(match.group(1))))
    return int(match.group(1))


def stored(relay: Relay, rid: int) -> AbuseReport:
    with relay.session_factory() as session:
        row = session.get(AbuseReport, rid)
        assert row is not None
        return row


def test_a_customers_report_of_spam_to_her_alias_corroborates_the_relays_record(
    relay: Relay,
) -> None:
    """The spam crossed the relay (a stranger at alice's alias, held); alice's report of it
    points to that record. The accusation is the record's, not the report's."""
    w = relay.world
    alias = w.alias("alice", "acme")
    spam = spam_to(alias)
    code, text = relay.send(
        spam.as_bytes(policy=email.policy.SMTP), mail_from=STRANGER_ADDRESS, rcpt=alias
    )
    assert said(code, text) == str(codes.QUARANTINED)
    [stranger] = relay.ledger("stranger_at_alias")
    [from_stranger] = scan(relay)
    data = attached_report(w.real["alice"], abuse_address(relay), spam)
    # alice's provider: SPF passes for her domain from here, and it publishes DMARC.
    code, text = relay.send(data, mail_from=w.real["alice"], rcpt=abuse_address(relay))
    rid = report_id(relay, code, text)
    for secret in (alias, "acme", "Acme", w.real["alice"]):
        assert secret not in text  # the receipt reveals nothing
    row = stored(relay, rid)
    assert (row.channel, row.verified, row.verification) == ("mailbox", True, "dmarc-aligned")
    assert (row.outcome, row.alias, row.reporter_customer_id) == (
        "attributed",
        alias,
        w.customers["alice"].id,
    )
    assert row.facts["corroborates_entry"] == stranger["seq"]
    assert row.signal_id == from_stranger.id and row.reason
    [entry] = relay.ledger("abuse_report")
    assert entry["subject"] == f"customer:{w.customers['alice'].id}"
    assert (entry["detail"]["report"], entry["detail"]["outcome"]) == (rid, "attributed")
    assert [s.id for s in scan(relay)] == [from_stranger.id]  # the report adds no signal
    assert from_stranger.source_principal_id == w.principals["acme"].id
    assert relay.delivered() == []


def test_a_report_naming_an_alias_the_relay_saw_no_stranger_at_is_only_a_claim(
    relay: Relay,
) -> None:
    """Any customer knows their own alias: a report of "spam" to it that never crossed the
    relay is kept as unconfirmed and names nobody."""
    w = relay.world
    alias = w.alias("alice", "acme")
    data = attached_report(w.real["alice"], abuse_address(relay), spam_to(alias))
    code, text = relay.send(data, mail_from=w.real["alice"], rcpt=abuse_address(relay))
    row = stored(relay, report_id(relay, code, text))
    assert (row.verified, row.outcome, row.signal_id) == (True, "unconfirmed", None)
    assert row.reason is not None and "no record" in row.reason
    assert scan(relay) == []


def test_a_dkim_signed_inline_forward_is_verified_too(relay: Relay) -> None:
    """erin's provider signs with DKIM (its SPF fails here): an aligned DKIM pass is proof."""
    w = relay.world
    alias = w.alias("erin", "acme")
    report = EmailMessage()
    report["From"] = w.real["erin"]
    report["To"] = abuse_address(relay)
    report["Subject"] = "Fwd: Cheap watches"
    report["Date"] = "Tue, 01 Oct 2024 10:00:00 +0000"
    report["Message-ID"] = "<report-2@dkim-mailbox.example>"
    report.set_content(
        "Spam again.\n\n---------- Forwarded message ---------\n"
        f"From: Watches <{STRANGER_ADDRESS}>\nDate: Tue, 1 Oct 2024 at 09:00\n"
        f"Subject: Cheap watches\nTo: <{alias}>\n\nBuy now.\n"
    )
    data = customer_dkim_sign(report.as_bytes(policy=email.policy.SMTP))
    code, text = relay.send(data, mail_from=w.real["erin"], rcpt=abuse_address(relay))
    row = stored(relay, report_id(relay, code, text))
    # Verified; the spam itself never crossed the relay, so it only claims the alias.
    assert (row.verified, row.outcome, row.alias) == (True, "unconfirmed", alias)
    assert row.reporter_customer_id == w.customers["erin"].id
    assert w.real["erin"].endswith(DKIM_DOMAIN)


def test_a_report_from_someone_who_is_not_a_customer_accuses_no_one(relay: Relay) -> None:
    alias = relay.world.alias("alice", "acme")
    data = attached_report(STRANGER_ADDRESS, abuse_address(relay), spam_to(alias))
    code, text = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=abuse_address(relay))
    row = stored(relay, report_id(relay, code, text))
    assert (row.verified, row.outcome, row.signal_id) == (False, "unverified", None)
    assert row.reporter_customer_id is None
    assert scan(relay) == []


def test_a_spoofed_customer_report_is_not_verified(relay: Relay) -> None:
    """dave's domain publishes SPF -all and no DKIM: his From alone proves nothing."""
    w = relay.world
    data = attached_report(w.real["dave"], abuse_address(relay), spam_to(w.alias("dave", "acme")))
    code, text = relay.send(data, mail_from=w.real["dave"], rcpt=abuse_address(relay))
    row = stored(relay, report_id(relay, code, text))
    assert (row.verified, row.verification, row.signal_id) == (
        False,
        "from-customer-unauthenticated",
        None,
    )


def test_a_malformed_report_gets_a_receipt_its_outcome_and_the_server_goes_on(
    relay: Relay,
) -> None:
    w = relay.world
    junk = (
        f"From: {w.real['alice']}\r\nTo: {abuse_address(relay)}\r\nSubject: help\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "!!!! not base64, not a message !!!!\r\n"
        "--b\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\n\xff\xfe\r\n"
    ).encode("latin-1")
    code, text = relay.send(junk, mail_from=w.real["alice"], rcpt=abuse_address(relay))
    row = stored(relay, report_id(relay, code, text))
    assert row.outcome in ("no_original", "rejected")
    [entry] = relay.ledger("abuse_report")
    assert entry["detail"]["outcome"] == row.outcome
    # Still serving: a seller's message goes through.
    alias = w.alias("alice", "acme")
    code, text = relay.send(
        message(from_=kit.SELLER_ADDRESS, to=alias, subject="[shipping] Parcel"),
        mail_from=kit.SELLER_ADDRESS,
        rcpt=alias,
        token=w.keys["acme"],
    )
    assert said(code, text) == str(codes.QUEUED)


@pytest.fixture
def small_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from kit.logged_relay(
        relay_settings,
        session_factory,
        tmp_path,
        caplog,
        relay_max_message_bytes=4096,
        abuse_mailbox_local="abuse",
    )


def test_the_abuse_mailbox_takes_mail_from_anyone_within_the_size_limit(
    small_relay: Relay,
) -> None:
    relay = small_relay
    rcpt = f"Abuse@{relay.settings.relay_domain}"  # local parts compare case-blind
    code, text = relay.send(
        message(from_=STRANGER_ADDRESS, to=rcpt), mail_from=STRANGER_ADDRESS, rcpt=rcpt
    )
    report_id(relay, code, text)
    big = message(from_=STRANGER_ADDRESS, to=rcpt, body=("y" * 70 + "\n") * 80)
    code, text = relay.send(big, mail_from=STRANGER_ADDRESS, rcpt=rcpt)
    assert said(code, text) == str(codes.MESSAGE_TOO_BIG)
    assert len(relay.ledger("abuse_report")) == 1
