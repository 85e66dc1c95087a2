"""Guilt ranking: the hypergeometric tail ranks the principal whose overlap with the reporters
is least likely by chance; for real-address reports only those who viewed real addresses
are candidates (aliases never carried one)."""

from __future__ import annotations

from datetime import UTC, datetime

from detect_testkit import Kit
from sqlalchemy.orm import Session

import world_kit as world
from mailveil.contacts.customers import create_customer
from mailveil.contacts.principals import create_principal
from mailveil.detect.ranking import is_significant, rank_principals

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def test_real_address_reports_rank_who_viewed_the_addresses(session: Session, kit: Kit) -> None:
    cs = [
        create_customer(
            session, kit.vault, external_id=f"c-{n}", email=f"r{n}@example.com", country="BR"
        )
        for n in range(120)
    ]
    colleague = create_principal(session, kind="employee", external_id="e-colleague")
    culprit = create_principal(session, kind="employee", external_id="e-culprit")
    # The colleague served almost every customer of the region (aliases only).
    world.aliases_at(session, kit.settings, [(c.id, colleague.id) for c in cs[:100]], T0)
    # The culprit viewed 15 real addresses through reveals; the reporters are 10 of them.
    for c in cs[:15]:
        world.used_reveal(session, culprit, c, T0, case_ext=f"k-{c.id}")
    session.flush()
    reporters = [c.id for c in cs[:10]]
    ranking = rank_principals(session, reporters, real_addresses=True)
    assert ranking.basis == "reveals"
    assert [r.principal_id for r in ranking.ranked] == [culprit.id]
    assert is_significant(ranking)
    # Counting aliases as well, the colleague who merely served them would be a candidate.
    loose = rank_principals(session, reporters)
    assert {r.principal_id for r in loose.ranked} == {culprit.id, colleague.id}
