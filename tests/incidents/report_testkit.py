"""A leak to build regulator reports on: a seller holding aliases of customers in several
member states, the UK, US states (one without a recorded state) and Brazil, a stranger
(a known spammer) writing to one alias, and the incident the ledger scan opens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import world_kit as world
from mailveil.config import Settings
from mailveil.contacts.models import Customer, Principal
from mailveil.db.base import utcnow
from mailveil.detect.models import Incident
from mailveil.detect.scan import scan_ledger
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault

# (country, subdivision) of each customer; emails are p<n>@example.com.
PLACES: list[tuple[str, str | None]] = [
    ("DE", None),
    ("DE", None),
    ("FR", None),
    ("IE", None),
    ("GB", None),
    ("US", "CA"),
    ("US", "TX"),
    ("US", None),
    ("BR", None),
]
SELLER_NAME = 'Leaky <b onmouseover="x()">Ltd</b>'


@dataclass
class Leak:
    incident_id: int
    customers: list[Customer]
    seller: Principal
    spammer: Principal
    aliases: list[str]
    emails: list[str]


def make_leak(
    session: Session,
    parts: tuple[Settings, Vault, Ledger, PolicyEngine],
    places: list[tuple[str, str | None]] = PLACES,
) -> Leak:
    settings, vault, ledger, policy = parts
    seller = world.seller(session, external_id="s-leaky", display_name=SELLER_NAME)
    spammer = world.seller(
        session,
        external_id="s-spam",
        display_name="Spam Co",
        attributes={"sending_domains": ["spam.example"]},
    )
    customers, aliases, emails = [], [], []
    for n, (country, sub) in enumerate(places):
        email = f"p{n}@example.com"
        c = world.customer(
            session, vault, n, external_id=f"c-{n}", email=email, country=country, subdivision=sub
        )
        world.order(session, c, seller, ext=f"o-{n}", placed_at=utcnow())
        alias = world.disclosed(session, (settings, policy, ledger), c, seller, ref=f"o-{n}")
        customers.append(c)
        aliases.append(alias.address)
        emails.append(email)
    stranger = {
        "principal": f"principal:{seller.id}",
        "reply": "550 5.7.1 not disclosed to you",
        "revoked": False,
        "envelope_from": "offers@spam.example",
        "header_from": "offers@spam.example",
        "authenticated_principal": None,
        "client_ip": "192.0.2.7",
        "helo": "mx.spam.example",
        "spf": "pass",
        "dkim": [{"d": "spam.example", "s": "s1", "result": "pass"}],
        "dmarc": "pass",
    }
    ledger.append(
        session,
        [
            Event(
                "stranger_at_alias",
                "unauthenticated",
                f"customer:{customers[0].id}",
                aliases[0],
                "inbound",
                None,
                stranger,
            )
        ],
    )
    scan_ledger(session, ledger)
    incident_id = session.scalar(
        select(Incident.id).where(Incident.source_principal_id == seller.id)
    )
    assert incident_id is not None
    return Leak(incident_id, customers, seller, spammer, aliases, emails)


CONTROLLER: dict[str, Any] = {
    "name": "Example Market GmbH",
    "address": "Hauptstraße 1\n10115 Berlin\nGermany",
    "establishment_country": "DE",
    "dpo_name": "Dana Privacy",
    "dpo_email": "dpo@market.example",
}
