"""The last line behind every console page: any string that is some customer's real
address (by the vault's blind index) is withheld; aliases, strangers' addresses and the one
address a granted reveal shows its grantee are left alone. On SQLite and PostgreSQL."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.console.web import WITHHELD, guard_addresses
from mailveil.contacts.customers import create_customer, customer_addresses_among
from mailveil.vault import Vault, init_keys


def test_real_addresses_are_withheld_and_nothing_else(session: Session, settings: Settings) -> None:
    init_keys(settings)
    vault = Vault.open(settings)
    create_customer(
        session, vault, external_id="c-1", email="Ada.Lovelace@Example.com", country="GB"
    )
    create_customer(session, vault, external_id="c-2", email="bob@example.org", country="DE")
    runtime = SimpleNamespace(settings=settings, vault=vault)
    html = (
        "<p>From ada.lovelace@example.com (quoted as ADA.LOVELACE@EXAMPLE.COM), to "
        "x1y2z3@relay.mailveil.localhost, sent by spam@bargains.example; bob@example.org"
        "</p>"
    )
    out = guard_addresses(session, runtime, html)  # type: ignore[arg-type]
    assert "ada.lovelace@example.com" not in out.lower() and "bob@example.org" not in out
    assert out.count(WITHHELD) == 3
    assert "x1y2z3@relay.mailveil.localhost" in out and "spam@bargains.example" in out
    kept = guard_addresses(session, runtime, html, keep="bob@example.org")  # type: ignore[arg-type]
    assert "bob@example.org" in kept and kept.count(WITHHELD) == 2
    assert customer_addresses_among(session, vault, ["not an address", "bob@example.org"]) == {
        "bob@example.org"
    }
