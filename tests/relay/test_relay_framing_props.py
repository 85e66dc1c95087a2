"""The generated framing set: Hypothesis draws attacks on innocent principals through the
real relay and the real API, on SQLite and PostgreSQL, and after each one asserts that no
innocent principal is a culprit of any incident or named by any signal.

Forgeries (``test_forged_and_replayed_senders``) cross what the From claims (an innocent
seller's sending address, another mailbox or a subdomain of its domain, a seller whose SPF
ends in ~all or ?all, an employee's address, a display name dressed as the seller) with the
envelope (the same, a stranger's, the null sender), the DKIM signature (none; the innocent's
own but not signing To, signing another recipient, broken, or covering only part of the body
with l=; an unaligned domain's; the stranger's own) and where it lands (another seller's
aliases, or the framer's own alias of the innocent), plus replays of the innocent's relayed
mail, exact or altered, to the alias it was sent to. Reports (``test_reports_of_innocent
mail``) send the innocent's relayed mail in every shape customers use, by the mailbox or the
API, altered as forwarders alter it, and forged "spam" from the innocent to real addresses.

The one framing the system cannot refute alone is kept out and stated: customers colluding
at two or more accounts of the same seller, each writing to their own alias (see
``detect.attribution``); here only one framer customer writes fresh mail to her own alias.

The counts of generated cases are printed (``pytest -s``) and each dimension must be drawn.
"""

from __future__ import annotations

import email.policy
import email.utils
from collections import Counter
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relay_server_kit import (
    AGENT_ADDRESS,
    RIVAL_DKIM_SELECTOR,
    RIVAL_DOMAIN,
    SELLER_ADDRESS,
    SELLER_DOMAIN,
    STRANGER_ADDRESS,
    STRANGER_DOMAIN,
    Relay,
    message,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.api.app import create_app
from mailveil.config import Settings
from mailveil.detect.models import AbuseReport
from mailveil.relay import codes

INNOCENT = ("acme", "soft", "neutral", "agent")
CLAIMS = {
    "seller-address": SELLER_ADDRESS,
    "seller-other-mailbox": f"news@{SELLER_DOMAIN}",
    "seller-subdomain": f"mail@eu.{SELLER_DOMAIN}",
    "softfail-seller": f"offers@{SOFT_DOMAIN}",
    "neutral-seller": f"offers@{NEUTRAL_DOMAIN}",
    "employee": AGENT_ADDRESS,
    "display-name": f'"{SELLER_ADDRESS}" <{STRANGER_ADDRESS}>',
}
ENVELOPES = ("as-from", "stranger", "null")
SIGNATURES = (
    "none",
    "innocent-unbound",
    "innocent-other-rcpt",
    "innocent-broken",
    "innocent-partial",
    "unaligned",
    "stranger-own",
)
TARGETS = ("rival-alias", "own-alias")
REPLAYS = ("exact", "altered-body", "new-message-id")
MUTATIONS = ("none", "subject", "date", "display-name", "to-real-address", "forged-real")
RUNS: Counter[str] = Counter()
EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from open_framing_relay(relay_settings, session_factory, tmp_path, caplog)


def innocents(relay: Relay) -> set[int]:
    return {relay.world.principals[name].id for name in INNOCENT}


def _envelope(choice: str, claimed: str) -> str:
    if choice == "null":
        return ""
    if choice == "stranger" or "<" in claimed:
        return STRANGER_ADDRESS
    return claimed


def _signed(kind: str, data: bytes, to_alias: bytes) -> bytes:
    headers = [b"from", b"to", b"subject", b"date"]
    if kind == "none":
        return data
    if kind == "innocent-unbound":
        return sign(data, SELLER_DOMAIN, ACME_SELECTOR, [b"from", b"subject", b"date"])
    if kind == "innocent-other-rcpt":
        # A genuine signed message of the innocent to someone else, To: left as signed.
        return sign(data.replace(to_alias, b"someone@elsewhere.example"), SELLER_DOMAIN,
                    ACME_SELECTOR, headers)  # fmt: skip
    if kind == "innocent-broken":
        return sign(data, SELLER_DOMAIN, ACME_SELECTOR, headers).replace(b"Hello", b"Hi!!!")
    if kind == "innocent-partial":
        import dkim
        from relay_server_kit import dkim_key

        pem, _ = dkim_key(SELLER_DOMAIN)
        header = dkim.sign(data, ACME_SELECTOR.encode(), SELLER_DOMAIN.encode(), pem,
                           include_headers=headers, length=True)  # fmt: skip
        return header + data + b"\r\nAppended by the framer: visit http://x.example\r\n"
    if kind == "unaligned":
        return sign(data, RIVAL_DOMAIN, RIVAL_DKIM_SELECTOR, headers)
    assert kind == "stranger-own"
    return sign(data, STRANGER_DOMAIN, "s1", headers)


def _check(relay: Relay) -> None:
    """After each attack: no piece naming an innocent counts, and no signal or incident
    names one."""
    mine = innocents(relay)
    for signal in scan(relay):
        for piece in signal.evidence["pieces"]:
            if piece["principal_id"] in mine:
                assert not piece["counted"], piece
    assert not accused(relay) & mine


@given(
    claim=st.sampled_from(sorted(CLAIMS)),
    envelope=st.sampled_from(ENVELOPES),
    signature=st.sampled_from(SIGNATURES),
    target=st.sampled_from(TARGETS),
)
@EXAMPLES
def test_forged_senders(
    relay: Relay, claim: str, envelope: str, signature: str, target: str
) -> None:
    w = relay.world
    if target == "own-alias":
        # Only alice writes fresh mail to her own alias of the innocent (see the docstring),
        # and she knows it only from the innocent's mail to her.
        if not relay.ledger("message"):
            acme_writes(relay, "alice")
        alias = w.alias("alice", "acme")
    else:
        alias = w.alias("alice", "rival")
    claimed = CLAIMS[claim]
    data = _signed(signature, message(from_=claimed, to=alias, subject="Deals"), alias.encode())
    for key in (f"claim:{claim}", f"envelope:{envelope}", f"dkim:{signature}", f"at:{target}"):
        RUNS[key] += 1
    code, _ = relay.send(data, mail_from=_envelope(envelope, claimed), rcpt=alias, source=FRAMER_IP)
    assert code in (codes.QUARANTINED.code, codes.QUEUED.code), code
    RUNS["forgery cases"] += 1
    _check(relay)


@given(victim=st.sampled_from(("alice", "carol", "dave")), replay=st.sampled_from(REPLAYS))
@settings(EXAMPLES, max_examples=12)
def test_replayed_relayed_mail(relay: Relay, victim: str, replay: str) -> None:
    """A customer's copy of the innocent's relayed mail, sent back to the alias in its To:,
    exact or altered."""
    copy = acme_writes(relay, victim)
    if replay == "altered-body":
        copy = copy.replace(b"your parcel", b"a prize")
    elif replay == "new-message-id":
        copy = copy.replace(b"Message-ID: <", b"Message-ID: <x")
    RUNS[f"replay:{replay}"] += 1
    alias = relay.world.alias(victim, "acme")
    code, _ = relay.send(copy, mail_from=STRANGER_ADDRESS, rcpt=alias, source=FRAMER_IP)
    assert code == codes.QUARANTINED.code
    RUNS["replay cases"] += 1
    _check(relay)


def _mutated(copy: bytes, mutation: str, reporter: str) -> bytes:
    if mutation == "subject":
        return copy.replace(b"Subject: [shipping] Your parcel", b"Subject: SPAM!!")
    if mutation == "date":
        return copy.replace(b"Date: ", b"Date: Mon, 01 Jan 2018 10:00:00 +0000\r\nX-Old-Date: ", 1)
    if mutation == "display-name":
        start = copy.index(b"\r\nFrom: ") + 2
        end = copy.index(b"\r\n", start)
        address = email.utils.parseaddr(copy[start + 6 : end].decode())[1]
        return copy[:start] + f"From: Totally Legit <{address}>".encode() + copy[end:]
    if mutation == "to-real-address":
        head, _, body = copy.partition(b"\r\n\r\n")
        lines = [
            (b"To: " + reporter.encode()) if line.startswith(b"To: ") else line
            for line in head.split(b"\r\n")
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body
    return copy


def _forged_real(reporter: str) -> bytes:
    """Spam to the reporter's real address claiming to come from the innocent seller."""
    spam = EmailMessage()
    spam["From"] = f"Acme Books <{SELLER_ADDRESS}>"
    spam["To"] = reporter
    spam["Subject"] = "Huge discounts"
    spam["Date"] = email.utils.formatdate(usegmt=True)
    spam["Message-ID"] = email.utils.make_msgid(domain=SELLER_DOMAIN)
    spam.set_content("Buy now.\n")
    return spam.as_bytes(policy=email.policy.SMTP)


@given(
    shape=st.sampled_from(SHAPES),
    channel=st.sampled_from(("mailbox", "api")),
    # dave's domain publishes SPF -all: his mailbox reports are unverified, as a framer's are.
    reporter=st.sampled_from(("alice", "carol", "dave")),
    mutation=st.sampled_from(MUTATIONS),
)
@EXAMPLES
def test_reports_of_innocent_mail(
    relay: Relay, shape: str, channel: str, reporter: str, mutation: str
) -> None:
    w = relay.world
    real = w.real[reporter]
    if mutation == "forged-real":
        original = _forged_real(real)
    else:
        original = _mutated(acme_writes(relay, reporter), mutation, real)
    abuse = f"{relay.settings.abuse_mailbox_local}@{relay.settings.relay_domain}"
    raw = report_of(shape, original, reporter=real, abuse=abuse)
    for key in (f"shape:{shape}", f"channel:{channel}", f"mutation:{mutation}"):
        RUNS[key] += 1
    if channel == "mailbox":
        code, reply = relay.send(raw, mail_from=real, rcpt=abuse)
        assert code == codes.REPORT_RECEIVED.code, reply
    else:
        relay.server.flush()
        with TestClient(create_app(relay.runtime), raise_server_exceptions=False) as client:
            answer = client.post(
                "/v1/reports",
                params={"customer_id": w.customers[reporter].id},
                content=raw,
                headers={
                    "Authorization": f"Bearer {w.keys['admin']}",
                    "Content-Type": "message/rfc822",
                },
            )
        assert answer.status_code == 202, answer.text
    RUNS["report cases"] += 1
    relay.server.flush()
    with relay.session_factory() as session:
        row = session.scalars(select(AbuseReport).order_by(AbuseReport.id.desc())).first()
        assert row is not None
        RUNS[f"outcome:{row.outcome}"] += 1
        # Nothing a report of the innocent's own (or forged) mail shows is a leak of it.
        assert row.outcome not in ("attributed",), (shape, mutation, row.reason)
    scan(relay)
    assert not accused(relay) & innocents(relay)


def test_every_dimension_was_generated() -> None:
    """Run after the generated tests (file order): each forgery and report dimension was
    drawn at least once, so the set above covered what it claims."""
    if not RUNS:
        pytest.skip("the generated framing tests did not run in this session")
    drawn = {key.split(":", 1)[1] for key in RUNS if ":" in key}
    missing = (set(CLAIMS) | set(ENVELOPES) | set(SIGNATURES) | set(REPLAYS) | set(SHAPES)) - drawn
    assert not missing, missing
    print(f"\nframing cases generated: {dict(sorted(RUNS.items()))}")
