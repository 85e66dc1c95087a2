"""Containment end to end through the relay: once an incident is contained, the culprit's
aliases refuse mail from anyone, and a stranger writing to one is still a signal that joins
the incident."""

from __future__ import annotations

from relay_server_kit import SELLER_ADDRESS, STRANGER_ADDRESS, Relay, message, reply_of
from sqlalchemy import select

from mailveil.detect.models import Incident, Signal
from mailveil.detect.scan import scan_ledger
from mailveil.detect.signals import record_signal
from mailveil.incidents.containment import contain
from mailveil.relay import codes


def test_contained_culprit_is_cut_off_and_strangers_still_signal(relay: Relay) -> None:
    w = relay.world
    ledger = relay.runtime.ledger
    with relay.session_factory() as session:
        signal = record_signal(
            session,
            ledger,
            kind="abuse_report",
            confidence="exact",
            summary="test: alias reported",
            source_principal_id=w.principals["acme"].id,
        )
        incident_id = signal.incident_id
        assert incident_id is not None
        done = contain(
            session,
            ledger=ledger,
            incident_id=incident_id,
            reason="confirmed leak",
            actor="test",
        )
        session.commit()
    assert done.suspended == [w.principals["acme"].id] and done.aliases_revoked == 5
    alias = w.alias("alice", "acme")
    code, text = relay.send(
        message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Parcel"),
        mail_from=SELLER_ADDRESS,
        rcpt=alias,
        token=w.keys["acme"],
    )
    assert reply_of(code, text) in (str(codes.SENDER_SUSPENDED), str(codes.MAILBOX_DISABLED))
    # Refused or held, by the stranger setting; never delivered.
    relay.send(message(from_=STRANGER_ADDRESS, to=alias), mail_from=STRANGER_ADDRESS, rcpt=alias)
    assert relay.delivered() == []
    [entry] = relay.ledger("stranger_at_alias")
    assert entry["detail"]["revoked"] is True
    with relay.session_factory() as session:
        assert scan_ledger(session, ledger).signals == {"stranger_at_alias": 1}
        session.commit()
        signals = session.scalars(select(Signal).order_by(Signal.id)).all()
        assert [s.incident_id for s in signals] == [incident_id, incident_id]
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.status == "contained"
