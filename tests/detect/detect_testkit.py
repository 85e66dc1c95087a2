"""Detection test kit: keys on the test's data directory and the long-lived objects, and the
anomaly world (a month of a team's case work in the ledger, then one employee's night export)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import mailveil.ledger.append as ledger_append
from mailveil.config import Settings
from mailveil.contacts.customers import create_customer
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import init_signing_key
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault, init_keys


@dataclass
class Kit:
    settings: Settings
    vault: Vault
    ledger: Ledger
    policy: PolicyEngine


def make_kit(settings: Settings) -> Kit:
    init_keys(settings)
    init_signing_key(settings)
    return Kit(settings, Vault.open(settings), Ledger.load(settings), PolicyEngine.load(settings))


# -- the anomaly world ------------------------------------------------------------------------

DAYS = 30
FIRST = date(2026, 3, 2)
LAST = FIRST + timedelta(days=DAYS - 1)


def at_us(day: date, hour: int, minute: int = 0) -> int:
    """A ledger time (microseconds since the epoch) on ``day`` at ``hour:minute`` UTC."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()) * (
        1_000_000
    )


def insider_history(engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> int:
    """20 EU agents doing case work for DAYS days; returns the insider's principal id."""
    init_keys(settings)
    init_signing_key(settings)
    vault, ledger = Vault.open(settings), Ledger.load(settings)
    rng = random.Random(5)
    with Session(engine) as s, s.begin():
        staff = [
            create_principal(
                s,
                kind="employee",
                external_id=f"agent-{n}",
                attributes={"team": "eu-support", "role": "agent", "region": "EU"},
            ).id
            for n in range(20)
        ]
        eu = [
            create_customer(
                s, vault, external_id=f"eu-{n}", email=f"eu{n}@example.com", country="DE"
            ).id
            for n in range(80)
        ]
        for cid in eu:
            create_case(s, external_id=f"case-{cid}", customer_id=cid, assignee_id=staff[0])
        apac = [
            create_customer(
                s, vault, external_id=f"jp-{n}", email=f"jp{n}@example.com", country="JP"
            ).id
            for n in range(1500)
        ]
    insider = staff[7]

    def append(at: int, events: list[Event]) -> None:
        monkeypatch.setattr(ledger_append, "now_us", lambda: at)
        with Session(engine) as s, s.begin():
            ledger.append(s, events)

    for d in range(DAYS):
        day = FIRST + timedelta(days=d)
        for pid in staff:
            events = []
            for _ in range(rng.randint(5, 12)):
                cid = rng.choice(eu)
                ref = f"case-{cid}" if rng.random() < 0.9 else None
                detail = {"principal": f"principal:{pid}", "team": "eu-support", "minted": False}
                events.append(
                    Event(
                        "disclosure",
                        f"principal:{pid}",
                        f"customer:{cid}",
                        None,
                        "support",
                        ref,
                        detail,
                    )
                )
            append(at_us(day, rng.randint(8, 17), rng.randint(0, 59)), events)
    # The last night: the insider exports every APAC customer at 02:00.
    exported = [
        Event(
            "disclosure",
            f"principal:{insider}",
            f"customer:{cid}",
            None,
            "support",
            None,
            {"principal": f"principal:{insider}", "team": "eu-support", "minted": True},
        )
        for cid in apac
    ]
    summary = {
        "rows": len(apac),
        "withheld": 0,
        "canaries": 0,
        "scope": "all",
        "country": "JP",
        "export": True,
    }
    exported.append(
        Event("employee_list", f"principal:{insider}", None, None, "support", None, summary)
    )
    append(at_us(LAST, 2), exported)
    return insider
