"""Blast radius against hand-computed sets: aliases held in the window, real addresses seen
through reveals, canaries left out, deleted customers counted apart, several culprits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

import world_kit as world
from mailveil.access.canaries import disclose_canaries, plant
from mailveil.contacts.customers import create_customer, delete_customer
from mailveil.contacts.disclosures import existing_aliases
from mailveil.contacts.models import Alias
from mailveil.contacts.principals import create_principal
from mailveil.errors import InvalidInput, NotFound
from mailveil.incidents.blast import blast_radius, exposures

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _alias(session: Session, settings: Any, cid: int, pid: int, at: datetime) -> None:
    world.aliases_at(session, settings, [(cid, pid)], at)
    assert (cid, pid) in existing_aliases(session, {(cid, pid)})


def test_hand_computed_radius(session: Session, parts: Any) -> None:
    settings, vault, ledger, _policy = parts
    cs = [
        create_customer(
            session, vault, external_id=f"c-{n}", email=f"p{n}@example.com", country=country
        )
        for n, country in enumerate(["DE", "DE", "FR", "US", "GB", "DE", "IT"])
    ]
    bad = create_principal(session, kind="employee", external_id="e-bad")
    fence = create_principal(session, kind="seller", external_id="s-fence")
    other = create_principal(session, kind="seller", external_id="s-other")
    # bad held aliases of c0, c1, c2 (c2 only after the window), c3 (revoked before it).
    _alias(session, settings, cs[0].id, bad.id, T0 - timedelta(days=10))
    _alias(session, settings, cs[1].id, bad.id, T0 + timedelta(days=1))
    _alias(session, settings, cs[2].id, bad.id, T0 + timedelta(days=40))
    _alias(session, settings, cs[3].id, bad.id, T0 - timedelta(days=50))
    session.execute(
        update(Alias)
        .where(Alias.customer_id == cs[3].id)
        .values(revoked_at=T0 - timedelta(days=5), revoked_reason="old")
    )
    # fence held c1 and c4; other (not a culprit) held c5.
    _alias(session, settings, cs[1].id, fence.id, T0)
    _alias(session, settings, cs[4].id, fence.id, T0)
    _alias(session, settings, cs[5].id, other.id, T0)
    # bad viewed c6's real address through a reveal, and c0's.
    for c in (cs[6], cs[0]):
        world.used_reveal(
            session, bad, c, T0, granted_at=T0 + timedelta(days=2), case_ext=f"case-{c.id}"
        )
    # A canary of bad's is never counted.
    [canary] = plant(
        session,
        settings=settings,
        vault=vault,
        ledger=ledger,
        principal_id=bad.id,
        country="DE",
        count=1,
    )
    disclose_canaries(
        session,
        settings=settings,
        ledger=ledger,
        principal=bad,
        canaries=[canary],
        purpose="support",
        actor="t",
    )
    delete_customer(session, cs[1].id)
    session.flush()

    window = {"since": T0, "until": T0 + timedelta(days=30)}
    radius = blast_radius(session, [bad.id, fence.id], **window)
    got = {e.customer_id: e for e in exposures(session, [bad.id, fence.id], **window)}
    assert set(got) == {cs[0].id, cs[1].id, cs[4].id, cs[6].id}
    assert got[cs[0].id].real_address and got[cs[0].id].alias
    assert got[cs[6].id].real_address and not got[cs[6].id].alias
    assert sorted(got[cs[1].id].routes) == sorted(
        [f"alias:principal:{bad.id}", f"alias:principal:{fence.id}"]
    )
    assert (radius.customers, radius.real_address, radius.alias_only, radius.deleted) == (
        4,
        2,
        2,
        1,
    )
    assert dict(radius.by_country) == {"DE": 2, "GB": 1, "IT": 1}
    assert dict(radius.by_region) == {"EEA": 3, "UK": 1}
    # Without a window: everything bad and fence ever held (c2 and the revoked c3 too).
    assert blast_radius(session, [bad.id, fence.id]).customers == 6
    with pytest.raises(InvalidInput):
        blast_radius(session, [])
    with pytest.raises(NotFound):
        blast_radius(session, [987654])
