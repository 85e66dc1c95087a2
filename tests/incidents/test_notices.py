"""Breach notices: one membership fact and one recipient per affected customer, never two
notices to one person, deleted customers skipped, each notice filled with that customer's
own facts, and the lint still applied to an operator's wording."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import world_kit as world
from mailveil.contacts.customers import create_customer, delete_customer
from mailveil.contacts.principals import create_principal
from mailveil.detect.incidents import set_status
from mailveil.detect.signals import record_signal
from mailveil.errors import Conflict, InvalidInput
from mailveil.incidents.controller import set_controller
from mailveil.incidents.notices import BUILT_IN, TEMPLATE, fact_id, prepare_notices
from mailveil.notify.models import Fact, Recipient
from mailveil.notify.templates import get_template, register_template, render

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _incident(session: Session, parts: Any) -> tuple[int, list[Any], Any]:
    settings, vault, ledger, _ = parts
    cs = [
        create_customer(
            session, vault, external_id=f"c-{n}", email=f"p{n}@example.com", country="DE"
        )
        for n in range(5)
    ]
    bad = create_principal(session, kind="employee", external_id="e-bad")
    world.aliases_at(session, settings, [(c.id, bad.id) for c in cs[:3]], T0)
    world.used_reveal(session, bad, cs[3], T0, case_ext="case-9")
    delete_customer(session, cs[2].id)
    signal = record_signal(
        session,
        ledger,
        kind="abuse_report",
        confidence="exact",
        summary="test",
        source_principal_id=bad.id,
    )
    assert signal.incident_id is not None
    set_controller(
        session,
        settings=settings,
        ledger=ledger,
        changes={"name": "Example Market", "dpo_email": "privacy@market.example"},
        actor="dpo",
    )
    return signal.incident_id, cs, bad


def test_one_notice_per_affected_customer_never_twice(session: Session, parts: Any) -> None:
    settings, _vault, ledger, _ = parts
    incident_id, cs, _bad = _incident(session, parts)
    with pytest.raises(Conflict):  # an open incident is not notified yet
        prepare_notices(
            session, settings=settings, ledger=ledger, incident_id=incident_id, actor="dpo"
        )
    set_status(
        session,
        ledger=ledger,
        incident_id=incident_id,
        status="confirmed",
        reason="proven",
        actor="inv",
    )
    first = prepare_notices(
        session, settings=settings, ledger=ledger, incident_id=incident_id, actor="dpo"
    )
    # c-0, c-1 (aliases), c-3 (real address through a reveal); c-2 deleted; c-4 untouched.
    assert (first.new_customers, first.deleted, first.already_told) == (3, 1, 0)
    assert first.status == "awaiting_approval"  # a second person approves, as for any send
    recipients = session.scalars(
        select(Recipient.customer_id).where(Recipient.send_id == first.send_id)
    ).all()
    assert sorted(recipients) == sorted([cs[0].id, cs[1].id, cs[3].id])
    again = prepare_notices(
        session, settings=settings, ledger=ledger, incident_id=incident_id, actor="dpo"
    )
    assert (again.new_customers, again.already_told, again.send_id) == (0, 3, None)
    # Each notice says what was exposed for that customer.
    template = get_template(session, TEMPLATE)
    bodies = {}
    for cid in (cs[0].id, cs[3].id):
        fact = session.scalar(select(Fact).where(Fact.fact_id == fact_id(incident_id, cid)))
        assert fact is not None
        _subject, body = render(
            template, {"customer": {"id": "x"}, "facts": {"affected": fact.attributes}}
        )
        bodies[cid] = body
    assert "private e-mail alias" in bodies[cs[0].id]
    assert "What was exposed: your e-mail address" in bodies[cs[3].id]
    assert "p0@example.com" not in bodies[cs[0].id]
    assert "Whom to contact: privacy@market.example" in bodies[cs[0].id]
    assert bodies[cs[0].id].rstrip().endswith("Example Market")


def test_no_notice_without_a_controller_and_a_contact_point(session: Session, parts: Any) -> None:
    settings, _vault, ledger, _ = parts
    incident_id, _cs, _bad = _incident(session, parts)
    set_status(
        session,
        ledger=ledger,
        incident_id=incident_id,
        status="confirmed",
        reason="proven",
        actor="inv",
    )
    set_controller(
        session, settings=settings, ledger=ledger, changes={"dpo_email": ""}, actor="dpo"
    )
    with pytest.raises(InvalidInput, match="contact point"):
        prepare_notices(
            session, settings=settings, ledger=ledger, incident_id=incident_id, actor="dpo"
        )


def test_operator_wording_still_goes_through_the_lint(session: Session, parts: Any) -> None:
    settings, _vault, ledger, _ = parts
    incident_id, _cs, _bad = _incident(session, parts)
    set_status(
        session,
        ledger=ledger,
        incident_id=incident_id,
        status="confirmed",
        reason="proven",
        actor="inv",
    )
    prepare_notices(session, settings=settings, ledger=ledger, incident_id=incident_id, actor="dpo")
    sloppy = {
        **BUILT_IN,
        "body": BUILT_IN["body"] + "\nYour account was tarminated. See https://x.example\n",
    }
    version = register_template(session, settings, sloppy, actor="dpo")
    codes = {f["code"] for f in version.findings}
    assert {"spelling", "link-in-notice"} <= codes
    from mailveil.errors import MailveilError

    with pytest.raises(MailveilError):
        prepare_notices(
            session, settings=settings, ledger=ledger, incident_id=incident_id, actor="dpo"
        )


def test_an_incident_without_a_source_cannot_be_notified(session: Session, parts: Any) -> None:
    settings, _vault, ledger, _ = parts
    signal = record_signal(
        session,
        ledger,
        kind="abuse_report",
        confidence="exact",
        summary="x",
        source_principal_id=create_principal(session, kind="seller", external_id="s").id,
    )
    assert signal.incident_id is not None
    from mailveil.detect.models import IncidentCulprit

    for row in session.scalars(select(IncidentCulprit)):
        session.delete(row)
    set_status(
        session,
        ledger=ledger,
        incident_id=signal.incident_id,
        status="confirmed",
        reason="r",
        actor="inv",
    )
    with pytest.raises(InvalidInput):
        prepare_notices(
            session, settings=settings, ledger=ledger, incident_id=signal.incident_id, actor="dpo"
        )
