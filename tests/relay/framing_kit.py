"""What a framer works with: a relay whose innocent sellers publish SPF and DKIM, a customer's
copy of relayed mail, the shapes in which customers report mail (``report_shapes``), signed
messages to replay, and the check that no innocent principal is named.

Shared by the framing tests through the real relay (``test_relay_framing``) and the
generated framing set (``test_relay_framing_props``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
import relay_server_kit as kit
from relay_server_kit import SELLER_ADDRESS, SELLER_DOMAIN, Relay, dkim_key, message
from report_shapes import SHAPES, as_delivered, report_of
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.principals import create_principal
from mailveil.detect.models import IncidentCulprit, Signal
from mailveil.detect.scan import scan_ledger
from mailveil.relay import codes
from smtp_kit import Received

FRAMER_IP = "127.0.0.2"
ACME_SELECTOR = "a1"
SOFT_DOMAIN = "soft-seller.example"
NEUTRAL_DOMAIN = "neutral-seller.example"
# acme publishes a DKIM key; two more innocent sellers publish SPF ~all and ?all.
EXTRA_DNS = {
    (f"{ACME_SELECTOR}._domainkey.{SELLER_DOMAIN}", "TXT"): [
        f"v=DKIM1; k=rsa; p={dkim_key(SELLER_DOMAIN)[1]}"
    ],
    (SOFT_DOMAIN, "TXT"): ["v=spf1 ip4:192.0.2.1 ~all"],
    (NEUTRAL_DOMAIN, "TXT"): ["v=spf1 ?all"],
}


def open_framing_relay(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    **overrides: Any,
) -> Iterator[Relay]:
    """The relay kit's world plus the sellers ``soft`` and ``neutral`` and acme's DKIM key."""
    for relay in kit.logged_relay(
        settings, session_factory, tmp_path, caplog, dns=EXTRA_DNS, **overrides
    ):
        with relay.session_factory() as session:
            for name, domain in (("soft", SOFT_DOMAIN), ("neutral", NEUTRAL_DOMAIN)):
                relay.world.principals[name] = create_principal(
                    session,
                    kind="seller",
                    external_id=name,
                    display_name=f"{name} shop",
                    attributes={"sending_domains": [domain]},
                )
            session.commit()
        yield relay


def sign(data: bytes, domain: str, selector: str, headers: list[bytes]) -> bytes:
    """``data`` with a DKIM signature of ``domain`` over ``headers`` (kit keys)."""
    pem, _ = dkim_key(domain)
    return dkim.sign(data, selector.encode(), domain.encode(), pem, include_headers=headers) + data


def mailbox_copy(got: Received) -> bytes:
    """The message as the customer's mailbox keeps it: Return-Path added on delivery."""
    return as_delivered(got.mail_from, got.data)


def acme_writes(relay: Relay, customer: str) -> bytes:
    """acme's ordinary mail to ``customer`` through the relay; the customer's copy."""
    w = relay.world
    alias = w.alias(customer, "acme")
    before = len(relay.delivered())
    code, _ = relay.send(
        message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Your parcel"),
        mail_from=SELLER_ADDRESS,
        rcpt=alias,
        token=w.keys["acme"],
    )
    assert code == codes.QUEUED.code
    return mailbox_copy(relay.delivered()[before])


def scan(relay: Relay) -> list[Signal]:
    relay.server.flush()
    with relay.session_factory() as session:
        scan_ledger(session, relay.runtime.ledger)
        session.commit()
        return list(session.scalars(select(Signal).order_by(Signal.id)))


def accused(relay: Relay) -> set[int]:
    relay.server.flush()
    with relay.session_factory() as session:
        return named(session)


def named(session: Session) -> set[int]:
    """Every principal a signal counts against or an incident names as a culprit."""
    out: set[int] = set(session.scalars(select(IncidentCulprit.principal_id)))
    for src, rcpt in session.execute(
        select(Signal.source_principal_id, Signal.recipient_principal_id)
    ):
        out.update(p for p in (src, rcpt) if p is not None)
    return out


__all__ = [
    "ACME_SELECTOR",
    "EXTRA_DNS",
    "FRAMER_IP",
    "NEUTRAL_DOMAIN",
    "SHAPES",
    "SOFT_DOMAIN",
    "accused",
    "acme_writes",
    "mailbox_copy",
    "named",
    "open_framing_relay",
    "report_of",
    "scan",
    "sign",
]
