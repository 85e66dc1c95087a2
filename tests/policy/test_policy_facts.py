"""The facts Cedar sees, built from the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.customers import create_customer
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case, create_order
from mailveil.db.base import utcnow
from mailveil.errors import NotFound
from mailveil.policy.facts import order_age_days, policy_input
from mailveil.vault import Vault


def test_order_age_is_whole_days_capped_past_the_window() -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert order_age_days(now, now + timedelta(hours=3), 90) == 0  # clock skew
    assert order_age_days(now, now - timedelta(hours=23), 90) == 0
    assert order_age_days(now, now - timedelta(days=90, hours=23), 90) == 90
    assert order_age_days(now, now - timedelta(days=91), 90) == 91
    assert order_age_days(now, now - timedelta(days=5000), 90) == 91


def test_policy_input_from_the_database(session: Session, settings: Settings, vault: Vault) -> None:
    canary = create_customer(
        session,
        vault,
        external_id="c",
        email="someone@example.org",
        country="PL",
        opt_outs=["marketing"],
        sensitive_topics=["pregnancy"],
        is_canary=True,
    )
    s = create_principal(session, kind="seller", external_id="s")
    e = create_principal(
        session,
        kind="employee",
        external_id="e",
        attributes={"team": "care", "role": "agent", "region": "eu"},
    )
    svc = create_principal(
        session, kind="service", external_id="n", attributes={"templates": ["b", "a"]}
    )
    for days in (200, 12):
        create_order(
            session,
            external_id=f"o{days}",
            customer_id=canary.id,
            seller_id=s.id,
            placed_at=utcnow() - timedelta(days=days, hours=1),
        )
    create_case(session, external_id="k", customer_id=canary.id, assignee_id=e.id)

    seller_in = policy_input(session, settings, canary.id, s.id, "order", "o12")
    assert seller_in.principal_type == "Seller"
    assert seller_in.principal == (("status", "active"),)
    # The canary flag is never given to Cedar.
    assert seller_in.customer == (
        ("country", "PL"),
        ("deleted", False),
        ("opt_outs", ("marketing",)),
        ("sensitive_topics", ("pregnancy",)),
    )
    assert seller_in.context == (("order_age_days", 12), ("purpose", "order"), ("window_days", 90))

    emp_in = policy_input(session, settings, canary.id, e.id, "support", "k")
    assert emp_in.principal == (
        ("region", "eu"),
        ("role", "agent"),
        ("status", "active"),
        ("team", "care"),
    )
    assert dict(emp_in.context)["open_case"] is True
    svc_in = policy_input(session, settings, canary.id, svc.id, "notification", "a")
    assert svc_in.principal == (("status", "active"), ("templates", ("a", "b")))
    assert dict(svc_in.context)["template"] == "a"
    with pytest.raises(NotFound):
        policy_input(session, settings, 10_000, s.id, "order")
    with pytest.raises(NotFound):
        policy_input(session, settings, canary.id, 10_000, "order")


def test_explain_request(session: Session, settings: Settings, vault: Vault) -> None:
    from mailveil.policy import PolicyEngine
    from mailveil.policy.facts import explain_request

    c = create_customer(session, vault, external_id="c", email="x@example.org", country="FR")
    s = create_principal(session, kind="seller", external_id="s")
    report = explain_request(session, settings, PolicyEngine.load(settings), c.id, s.id, "order")
    assert not report.decision.allowed
    assert report.decision.reason == "no order with this seller in the last 90 days"
    assert report.permitting == () and report.forbidding == ()
