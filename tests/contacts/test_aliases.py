"""Alias addresses: alphabet, entropy, uniqueness, stability, revocation, the report."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from contacts_testkit import ledger_rows
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.aliases import (
    ALPHABET,
    ENTROPY_BITS,
    LOCAL_CHARS,
    alias_for_pair,
    alias_report,
    lookup_alias,
    lookup_reverse_alias,
    mint_pairs,
    name_prefix,
    random_locals,
    revoke_alias,
)
from mailveil.contacts.disclosures import REVOKED_REASON, disclose
from mailveil.contacts.models import Alias
from mailveil.db.base import utcnow
from mailveil.errors import InvalidInput, NotFound, Revoked
from mailveil.ledger.append import Ledger
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault
from world_kit import SECRET_DOMAIN, customer, order, seller


def test_alphabet_has_no_look_alikes_and_the_entropy_is_at_least_64_bits() -> None:
    assert len(set(ALPHABET)) == len(ALPHABET) == 31
    assert not set("01oli") & set(ALPHABET)
    assert ALPHABET.lower() == ALPHABET
    assert math.isclose(ENTROPY_BITS, LOCAL_CHARS * math.log2(31))
    assert ENTROPY_BITS >= 64  # 14 * 4.954 = 69.4 bits


def test_random_parts_are_uniform_and_unique() -> None:
    parts = random_locals(20_000)
    assert len(set(parts)) == len(parts)
    assert all(len(p) == LOCAL_CHARS and set(p) <= set(ALPHABET) for p in parts)
    counts = Counter("".join(parts))
    expected = 20_000 * LOCAL_CHARS / 31
    # Chi-square with 30 degrees of freedom: 99.9th percentile is about 59.7.
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in ALPHABET)
    assert chi2 < 60, chi2
    # Every position is uniform too (a biased position would lower the entropy).
    for pos in range(LOCAL_CHARS):
        column = Counter(p[pos] for p in parts)
        assert len(column) == 31


def test_name_prefix_and_minted_shapes(settings: Settings) -> None:
    assert name_prefix("Acme Bücher GmbH & Co.") == "acme-bucher-gmbh-co"
    assert name_prefix("東京ショップ") == ""
    assert name_prefix("x" * 80) == "x" * 24
    (alias, reverse), (alias2, reverse2) = mint_pairs(settings, ["Acme Books", ""])
    domain = "@" + settings.relay_domain
    assert alias.endswith(domain) and len(alias.split("@")[0]) == LOCAL_CHARS
    assert reverse.startswith("acme-books.") and reverse.endswith(domain)
    assert len(reverse2.split("@")[0]) == LOCAL_CHARS and alias != alias2


def _allowed(
    session: Session,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    cid: int,
    pid: int,
) -> tuple[str, str]:
    r = disclose(
        session,
        settings=settings,
        policy=policy,
        ledger=ledger,
        customer_id=cid,
        principal_id=pid,
        purpose="order",
        ref="o-1",
        actor="system",
    )
    assert r.allowed and r.alias and r.reverse_alias, r.reason
    return r.alias, r.reverse_alias


def test_one_stable_alias_per_pair(
    session: Session,
    settings: Settings,
    vault: Vault,
    policy: PolicyEngine,
    ledger: Ledger,
) -> None:
    c1, c2 = customer(session, vault, 1), customer(session, vault, 2)
    s1, s2 = seller(session, 1), seller(session, 2)
    for c in (c1, c2):
        for s in (s1, s2):
            order(session, c, s)
    first = _allowed(session, settings, policy, ledger, c1.id, s1.id)
    assert _allowed(session, settings, policy, ledger, c1.id, s1.id) == first
    others = {
        _allowed(session, settings, policy, ledger, c1.id, s2.id),
        _allowed(session, settings, policy, ledger, c2.id, s1.id),
        _allowed(session, settings, policy, ledger, c2.id, s2.id),
    }
    everything = {first, *others}
    assert len(everything) == 4
    addresses = [a for pair in everything for a in pair]
    assert len(set(addresses)) == 8
    for a in addresses:
        assert "secret" not in a and "person" not in a and SECRET_DOMAIN not in a
    # The database itself refuses a second alias for a pair.
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(
            insert(Alias).values(
                customer_id=c1.id,
                principal_id=s1.id,
                address="x@y.example",
                reverse_address="z@y.example",
                created_at=utcnow(),
            )
        )


def test_lookup_revoke_and_report(
    session: Session,
    settings: Settings,
    vault: Vault,
    policy: PolicyEngine,
    ledger: Ledger,
) -> None:
    c = customer(session, vault, 1)
    s = seller(session, 1, display_name="Acme Books")
    order(session, c, s)
    alias, reverse = _allowed(session, settings, policy, ledger, c.id, s.id)
    row = lookup_alias(session, alias.upper())
    assert row is not None and row.customer_id == c.id and row.principal_id == s.id
    assert lookup_reverse_alias(session, reverse) is row
    assert alias_for_pair(session, c.id, s.id) is row
    assert lookup_alias(session, "nobody@" + settings.relay_domain) is None

    with pytest.raises(InvalidInput):
        revoke_alias(session, ledger, address=alias, reason=" ", actor="system")
    with pytest.raises(NotFound):
        revoke_alias(session, ledger, address="no@x.example", reason="r", actor="a")
    revoke_alias(session, ledger, address=alias, reason="spam reported", actor="apikey:9")
    assert row.revoked_at is not None and row.revoked_by == "apikey:9"
    with pytest.raises(Revoked):
        revoke_alias(session, ledger, address=alias, reason="again", actor="a")

    # The safer behaviour: a revoked alias is not handed out again, and that is ledgered.
    again = disclose(
        session,
        settings=settings,
        policy=policy,
        ledger=ledger,
        customer_id=c.id,
        principal_id=s.id,
        purpose="order",
        ref="o-2",
        actor="system",
    )
    assert not again.allowed and again.reason == REVOKED_REASON and again.alias is None

    entries = ledger_rows(session)
    assert [e.kind for e in entries] == ["disclosure", "alias_revoked", "disclosure_denied"]
    assert all(e.alias == alias for e in entries)
    report = alias_report(session, alias).to_dict()
    assert report["principal"]["external_id"] == "seller-1"
    assert report["principal"]["display_name"] == "Acme Books"
    assert report["customer"] == {"id": c.id, "external_id": "cust-1"}
    assert report["alias"]["revoked_reason"] == "spam reported"
    assert report["alias"]["first_disclosed_at"] is not None
    assert [h["kind"] for h in report["history"]] == [e.kind for e in entries]
    assert SECRET_DOMAIN not in str(report) and "Secret.Person" not in str(report)
    paged = alias_report(session, alias, limit=2)
    assert len(paged.history) == 2 and paged.next_after_seq == paged.history[-1]["seq"]
    with pytest.raises(NotFound):
        alias_report(session, "missing@" + settings.relay_domain)
