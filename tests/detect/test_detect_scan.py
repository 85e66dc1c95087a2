"""The ledger scan turns relay and access entries into signals, groups them into incidents
by source principal, and an incident's evidence bundle verifies from itself alone."""

from __future__ import annotations

import copy
import json
from typing import Any

from detect_testkit import Kit
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.canaries import disclose_canaries, plant
from mailveil.contacts.customers import create_customer
from mailveil.contacts.disclosures import disclose
from mailveil.contacts.models import Principal
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_order
from mailveil.detect.evidence import build_bundle, verify_bundle
from mailveil.detect.incidents import incident_view, set_status, timeline
from mailveil.detect.models import Incident, Signal
from mailveil.detect.scan import PROBING_REFUSALS, scan_ledger
from mailveil.ledger.events import Event


def _shop(session: Session, kit: Kit) -> dict[str, Any]:
    customer = create_customer(
        session, kit.vault, external_id="c-1", email="victim@example.com", country="DE"
    )
    leaky = create_principal(session, kind="seller", external_id="s-leaky", display_name="Leaky")
    spammer = create_principal(
        session,
        kind="seller",
        external_id="s-spam",
        display_name="Spam Co",
        attributes={"sending_domains": ["spam.example"]},
    )
    create_order(session, external_id="o-1", customer_id=customer.id, seller_id=leaky.id)
    result = disclose(
        session,
        settings=kit.settings,
        policy=kit.policy,
        ledger=kit.ledger,
        customer_id=customer.id,
        principal_id=leaky.id,
        purpose="order",
        ref="o-1",
        actor="test",
    )
    assert result.allowed
    return {"customer": customer, "leaky": leaky, "spammer": spammer, "alias": result.alias}


def _stranger(session: Session, kit: Kit, shop: dict[str, Any], sender: str) -> int:
    """A stranger_at_alias entry shaped as the relay writes it (see relay.identity): SPF
    and DKIM pass, aligned with the From domain, the signature naming the alias."""
    domain = sender.split("@")[1]
    detail = {
        "principal": f"principal:{shop['leaky'].id}",
        "reply": "550 5.7.1 not disclosed to you",
        "revoked": False,
        "envelope_from": sender,
        "header_from": sender,
        "authenticated_principal": None,
        "client_ip": "192.0.2.7",
        "helo": "mx.spam.example",
        "spf": "pass",
        "spf_domain": domain,
        "spf_aligned": True,
        "dkim": [{"d": domain, "s": "s1", "result": "pass", "aligned": True, "covers": "rcpt"}],
        "from_domain": domain,
        "dmarc": "pass",
    }
    event = Event(
        "stranger_at_alias",
        "unauthenticated",
        f"customer:{shop['customer'].id}",
        shop["alias"],
        "inbound",
        None,
        detail,
    )
    return kit.ledger.append(session, [event])[0]


def test_a_stranger_at_an_alias_names_who_leaked_it_and_who_received_it(
    session: Session, kit: Kit
) -> None:
    shop = _shop(session, kit)
    seq = _stranger(session, kit, shop, "offers@news.spam.example")
    result = scan_ledger(session, kit.ledger)
    assert result.signals == {"stranger_at_alias": 1}
    [signal] = session.scalars(select(Signal)).all()
    assert (signal.source_principal_id, signal.recipient_principal_id) == (
        shop["leaky"].id,
        shop["spammer"].id,
    )
    assert signal.ledger_seq == seq and signal.confidence == "exact"
    [recipient] = [p for p in signal.evidence["pieces"] if p["role"] == "recipient"]
    assert (recipient["strength"], recipient["basis"]) == ("authenticated", "spf-aligned")
    assert "sending domain spam.example" in recipient["reason"]
    incident = session.get(Incident, signal.incident_id)
    assert incident is not None and incident.source_principal_id == shop["leaky"].id
    view = incident_view(session, incident)
    assert {(c["external_id"], c["role"], c["strength"]) for c in view["culprits"]} == {
        ("s-leaky", "source", "relay-record"),
        ("s-spam", "recipient", "authenticated"),
    }
    assert not any(c["confirmation_required"] for c in view["culprits"])
    assert view["hours_left_to_notify"] > 71
    # Scanning again files nothing new; a second stranger joins the same incident.
    assert scan_ledger(session, kit.ledger).signals == {}
    _stranger(session, kit, shop, "unknown@elsewhere.example")
    again = scan_ledger(session, kit.ledger)
    assert again.signals == {"stranger_at_alias": 1}
    assert session.scalar(select(Incident.signal_count).where(Incident.id == incident.id)) == 2
    kinds = [e["kind"] for e in timeline(session, incident.id)]
    assert kinds[:3] == ["stranger_at_alias", "incident_opened", "signal"]


def test_the_evidence_bundle_verifies_alone_and_tampering_is_caught(
    session: Session, kit: Kit
) -> None:
    shop = _shop(session, kit)
    _stranger(session, kit, shop, "offers@spam.example")
    scan_ledger(session, kit.ledger)
    incident_id = session.scalar(select(Incident.id))
    assert incident_id is not None
    bundle = json.loads(json.dumps(build_bundle(session, kit.settings, kit.ledger, incident_id)))
    check = verify_bundle(bundle, verifier_key=kit.ledger.signer.verifier_key)
    assert check.ok, check.checks
    passed = [what for what, ok, _ in check.checks if ok]
    assert any(f"disclosed to principal:{shop['leaky'].id}" in w for w in passed)
    assert "victim@example.com" not in json.dumps(bundle)

    forged = copy.deepcopy(bundle)
    forged["claims"][0]["source"] = f"principal:{shop['spammer'].id}"  # blame someone else
    assert not verify_bundle(forged).ok
    edited = copy.deepcopy(bundle)
    edited["entries"][0]["leaf"] = edited["entries"][0]["leaf"].replace("s1", "s2")
    edited["entries"][0]["leaf"] = edited["entries"][0]["leaf"].replace('"order"', '"other"')
    assert not verify_bundle(edited).ok
    other_key = "other+00000000+" + kit.ledger.signer.verifier_key.split("+", 2)[2]
    assert not verify_bundle(bundle, verifier_key=other_key).ok
    assert not verify_bundle({"format": "something else"}).ok
    assert not verify_bundle({"format": "mailveil-evidence/1"}).ok


def test_mail_to_a_canary_alias_is_a_canary_hit_naming_its_employee(
    session: Session, kit: Kit
) -> None:
    employee = create_principal(session, kind="employee", external_id="e-1", display_name="Eve")
    create_customer(session, kit.vault, external_id="c-100001", email="r@example.com", country="FR")
    [canary] = plant(
        session,
        settings=kit.settings,
        vault=kit.vault,
        ledger=kit.ledger,
        principal_id=employee.id,
        country="FR",
        count=1,
    )
    aliases = disclose_canaries(
        session,
        settings=kit.settings,
        ledger=kit.ledger,
        principal=employee,
        canaries=[canary],
        purpose="support",
        actor=f"principal:{employee.id}",
    )
    alias = aliases[canary.id][0]
    message = Event(
        "message",
        f"principal:{employee.id}",
        f"customer:{canary.id}",
        alias,
        "outbound",
        "support",
        {"principal": f"principal:{employee.id}", "size": 10, "sha256": "0" * 64},
    )
    kit.ledger.append(session, [message])
    assert scan_ledger(session, kit.ledger).signals == {"canary_hit": 1}
    signal = session.scalars(select(Signal)).one()
    assert signal.source_principal_id == employee.id and signal.kind == "canary_hit"


def test_many_refusals_of_one_employee_are_a_signal(session: Session, kit: Kit) -> None:
    employee = create_principal(session, kind="employee", external_id="e-2")
    refusals = [
        Event(
            "access_refused", f"principal:{employee.id}", None, detail={"code": "unknown-customer"}
        )
        for _ in range(PROBING_REFUSALS)
    ]
    kit.ledger.append(session, refusals)
    assert scan_ledger(session, kit.ledger).signals == {"access_refusals": 1}


def test_incident_statuses_move_forward_only_and_are_ledgered(session: Session, kit: Kit) -> None:
    shop = _shop(session, kit)
    _stranger(session, kit, shop, "offers@spam.example")
    scan_ledger(session, kit.ledger)
    incident_id = session.scalar(select(Incident.id))
    assert incident_id is not None
    set_status(
        session,
        ledger=kit.ledger,
        incident_id=incident_id,
        status="confirmed",
        reason="alias leak proven",
        actor="investigator:1",
    )
    import pytest

    from mailveil.errors import Conflict

    with pytest.raises(Conflict):
        set_status(
            session,
            ledger=kit.ledger,
            incident_id=incident_id,
            status="open",
            reason="back",
            actor="investigator:1",
        )
    kinds = [e["kind"] for e in timeline(session, incident_id)]
    assert kinds[-1] == "incident_status"
    assert session.get(Principal, shop["leaky"].id) is not None
