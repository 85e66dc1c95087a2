"""Guilt ranking: the hypergeometric tail ranks the principal whose overlap with the reporters
is least likely by chance; for real-address reports only those who viewed real addresses
are candidates (aliases never carried one)."""

from __future__ import annotations

from datetime import UTC, datetime

from detect_testkit import Kit
from sqlalchemy.orm import Session

from mailveil.access.models import RevealRequest
from mailveil.contacts.customers import create_customer
from mailveil.contacts.disclosures import mint_aliases
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case
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
    existing: dict[tuple[int, int], tuple[str, str, bool]] = {}
    mint_aliases(session, kit.settings, {(c.id, colleague.id): "x" for c in cs[:100]}, existing, T0)
    # The culprit viewed 15 real addresses through reveals; the reporters are 10 of them.
    for c in cs[:15]:
        case = create_case(
            session, external_id=f"k-{c.id}", customer_id=c.id, assignee_id=culprit.id
        )
        session.add(
            RevealRequest(
                requester_id=culprit.id,
                customer_id=c.id,
                case_id=case.id,
                justification="j" * 20,
                status="used",
                approvals_required=1,
                approvals=1,
                views_allowed=1,
                views_used=1,
                version=1,
                created_at=T0,
                expires_at=T0,
                granted_at=T0,
            )
        )
    session.flush()
    reporters = [c.id for c in cs[:10]]
    ranking = rank_principals(session, reporters, real_addresses=True)
    assert ranking.basis == "reveals"
    assert [r.principal_id for r in ranking.ranked] == [culprit.id]
    assert is_significant(ranking)
    # Counting aliases as well, the colleague who merely served them would be a candidate.
    loose = rank_principals(session, reporters)
    assert {r.principal_id for r in loose.ranked} == {culprit.id, colleague.id}
