"""Containing an incident whose culprit is a notification service kills its open sends."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mailveil.contacts.customers import create_customer
from mailveil.contacts.principals import create_principal
from mailveil.demo.notify_acts import GIFT
from mailveil.detect.signals import record_signal
from mailveil.incidents.containment import contain
from mailveil.notify.audience import Entry
from mailveil.notify.sends import create_send, get_send
from mailveil.notify.templates import register_template


def test_containment_kills_the_culprit_services_open_sends(session: Session, parts: Any) -> None:
    settings, vault, ledger, _ = parts
    create_customer(session, vault, external_id="c-1", email="p1@example.com", country="DE")
    service = create_principal(session, kind="service", external_id="registry-notifier")
    template = register_template(session, settings, GIFT, actor="team")
    send = create_send(
        session, settings, ledger, template=template, entries=[Entry("c-1", None)], actor="job"
    )
    signal = record_signal(
        session, ledger, kind="abuse_report", confidence="exact", summary="t",
        source_principal_id=service.id,
    )  # fmt: skip
    assert signal.incident_id is not None
    done = contain(
        session, ledger=ledger, incident_id=signal.incident_id,
        reason="leak", actor="inv",
    )  # fmt: skip
    assert done.sends_cancelled == 1
    assert get_send(session, send.id).status == "killed"
