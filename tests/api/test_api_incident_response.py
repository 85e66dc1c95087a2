"""Incident response through the API: blast radius (incident and dry run), containment of
every culprit (one person on strong evidence, a second person's confirmation on weak), the
regulator report whose numbers are the blast radius's, and notices."""

from __future__ import annotations

from typing import Any

from api_testkit import Api, stranger_at
from sqlalchemy.orm import Session

from mailveil.ledger.events import Event
from mailveil.runtime import Runtime


def _incident(admin: Api, session: Session, runtime: Runtime) -> dict[str, Any]:
    """A stranger whose own domain is a registered seller's (proven by an aligned SPF pass)
    wrote to an alias never shown to its customer: both culprits on strong evidence."""
    customers = [
        admin.customer(f"c-{n}", f"b{n}@example.com", country)
        for n, country in enumerate(["DE", "FR", "US"])
    ]
    seller = admin.principal("seller", "s-leaky", display_name="Leaky")
    spammer = admin.principal(
        "seller", "s-spam", display_name="Spam Co", attributes={"sending_domains": ["spam.example"]}
    )
    aliases = []
    for c in customers:
        admin.order(f"o-{c['id']}", c["id"], seller["id"])
        aliases.append(
            admin.ok(
                "post",
                "/v1/disclosures",
                201,
                json={"customer_id": c["id"], "principal_id": seller["id"], "purpose": "order"},
            )["alias"]
        )
    stranger_at(
        runtime, session, alias=aliases[0], customer_id=customers[0]["id"], owner_id=seller["id"]
    )
    investigator = admin.key_for("investigator")
    investigator.ok("post", "/v1/detect/run")
    [incident] = investigator.ok("get", "/v1/incidents")["items"]
    assert not any(c["confirmation_required"] for c in incident["culprits"])
    return {
        "investigator": investigator,
        "incident": incident,
        "seller": seller,
        "spammer": spammer,
        "aliases": aliases,
        "customers": customers,
    }


def test_blast_radius_containment_and_regulator_report(
    admin: Api, session: Session, runtime: Runtime
) -> None:
    w = _incident(admin, session, runtime)
    inv, incident = w["investigator"], w["incident"]
    radius = inv.ok("get", f"/v1/incidents/{incident['id']}/blast-radius")
    assert radius["customers"] == 3 and radius["by_region"] == {"EEA": 2, "NA": 1}
    dry = inv.ok("get", "/v1/blast-radius", params={"principal_id": [w["seller"]["id"]]})
    assert dry["customers"] == 3
    done = inv.ok(
        "post", f"/v1/incidents/{incident['id']}/contain", json={"reason": "confirmed leak"}
    )
    # The source and the recipient the spam came from are both suspended, by one person:
    # both rest on strong evidence (a relay record, an authenticated sender).
    assert done["status"] == "contained" and done["confirmed_by"] is None
    assert done["suspended"] == [w["seller"]["id"], w["spammer"]["id"]]
    assert [(c["strength"], c["strong"]) for c in done["culprits"]] == [
        ("relay-record", True),
        ("authenticated", True),
    ]
    assert done["aliases_revoked"] == 3
    for alias in w["aliases"]:
        assert inv.ok("get", f"/v1/aliases/{alias}")["alias"]["revoked_at"] is not None
    assert inv.ok("get", f"/v1/incidents/{incident['id']}")["status"] == "contained"
    again = inv.post(f"/v1/incidents/{incident['id']}/contain", json={"reason": "twice"})
    assert again.status_code == 409
    report = inv.ok("get", f"/v1/incidents/{incident['id']}/report")
    assert report["people"]["count"] == radius["customers"] == 3
    assert report["categories"][0]["people"] == 3
    assert {m["code"]: m["people"] for m in report["people"]["by_member_state"]} == {
        "DE": 1,
        "FR": 1,
    }
    assert any(m["what"].startswith("Contained") for m in report["measures_taken"])
    assert report["clock"]["status_text"].startswith("due in 71 hours")
    html = inv.get(f"/v1/incidents/{incident['id']}/report/html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "Personal data breach report" in html.text and "b0@example.com" not in html.text
    timeline = [
        e["kind"] for e in inv.ok("get", f"/v1/incidents/{incident['id']}/timeline")["items"]
    ]
    assert "incident_action" in timeline
    assert (
        admin.key_for("backend").get(f"/v1/incidents/{incident['id']}/blast-radius").status_code
        == 403
    )


def test_containment_of_an_already_suspended_principal_still_revokes(
    admin: Api, session: Session, runtime: Runtime
) -> None:
    w = _incident(admin, session, runtime)
    inv, incident = w["investigator"], w["incident"]
    admin.ok("post", f"/v1/principals/{w['seller']['id']}/suspend", json={"reason": "early"})
    done = inv.ok("post", f"/v1/incidents/{incident['id']}/contain", json={"reason": "confirmed"})
    assert done["already_suspended"] == [w["seller"]["id"]] and done["aliases_revoked"] == 0
    bad = inv.get("/v1/blast-radius", params={"principal_id": [424242]})
    assert bad.status_code == 404  # unknown ids are not found (the document says so)


def test_notices_for_a_contained_incident(admin: Api, session: Session, runtime: Runtime) -> None:
    w = _incident(admin, session, runtime)
    inv, incident = w["investigator"], w["incident"]
    assert inv.post(f"/v1/incidents/{incident['id']}/notices").status_code == 409  # open
    inv.ok("post", f"/v1/incidents/{incident['id']}/contain", json={"reason": "confirmed"})
    nameless = inv.post(f"/v1/incidents/{incident['id']}/notices")
    assert nameless.status_code == 422 and "contact point" in nameless.json()["detail"]
    inv.ok(
        "patch",
        "/v1/report/controller",
        json={"name": "Example Market", "dpo_email": "privacy@market.example"},
    )
    first = inv.ok("post", f"/v1/incidents/{incident['id']}/notices", 201)
    assert first["new_customers"] == 3 and first["send_status"] == "awaiting_approval"
    again = inv.ok("post", f"/v1/incidents/{incident['id']}/notices", 201)
    assert again["new_customers"] == 0 and again["already_told"] == 3


def test_a_culprit_named_by_weak_evidence_needs_a_second_person_to_contain(
    admin: Api, session: Session, runtime: Runtime
) -> None:
    """Strangers at the aliases of two customers who had seen them (the seller wrote to
    both first): the seller is named, but weakly; one investigator asks, another confirms."""
    seller = admin.principal("seller", "s-1", display_name="Shop")
    customers = [admin.customer(f"c-{n}", f"b{n}@example.com") for n in range(2)]
    for c in customers:
        admin.order(f"o-{c['id']}", c["id"], seller["id"])
        alias = admin.ok(
            "post",
            "/v1/disclosures",
            201,
            json={"customer_id": c["id"], "principal_id": seller["id"], "purpose": "order"},
        )["alias"]
        shown = Event(
            "message",
            f"principal:{seller['id']}",
            f"customer:{c['id']}",
            alias,
            "to_customer",
            "shipping",
            {"principal": f"principal:{seller['id']}", "size": 1, "sha256": "0" * 64},
        )
        runtime.ledger.append(session, [shown])
        stranger_at(
            runtime, session, alias=alias, customer_id=c["id"], owner_id=seller["id"], proven=False
        )
    first, second = admin.key_for("investigator"), admin.key_for("investigator")
    first.ok("post", "/v1/detect/run")
    [incident] = first.ok("get", "/v1/incidents")["items"]
    assert [(c["strength"], c["confirmation_required"]) for c in incident["culprits"]] == [
        ("relay-record", True)
    ]
    url = f"/v1/incidents/{incident['id']}/contain"
    asked = first.ok("post", url, 202, json={"reason": "two customers' aliases spammed"})
    assert (asked["status"], asked["suspended"]) == ("awaiting_confirmation", [])
    assert asked["culprits"][0]["strong"] is False
    # Each piece of evidence that named it, with its strength and why it is weak.
    shown = asked["culprits"][0]["pieces"]
    assert [(p["strength"], p["basis"], p["weak"]) for p in shown] == [
        ("relay-record", "alias-disclosure", True)
    ] * 2
    assert "2 customers" in shown[0]["reason"]
    assert admin.ok("get", f"/v1/principals/{seller['id']}")["status"] == "active"
    assert first.post(url, json={"reason": "me again"}).status_code == 409
    view = first.ok("get", f"/v1/incidents/{incident['id']}")
    assert view["containment_request"]["reason"] == "two customers' aliases spammed"
    done = second.ok("post", url, json={"reason": "confirmed by a second investigator"})
    assert done["status"] == "contained" and done["suspended"] == [seller["id"]]
    assert done["requested_by"] != done["confirmed_by"]
    assert admin.ok("get", f"/v1/principals/{seller['id']}")["status"] == "suspended"


def test_the_notice_template_can_be_replaced_before_the_first_notice_round(
    admin: Api, session: Session, runtime: Runtime
) -> None:
    """The incident-response service is created when its template is first registered, so
    an operator's own breach notice comes before any notice round, which sends that one."""
    from mailveil.incidents.notices import BUILT_IN

    own = {**BUILT_IN, "subject": "Example Market: an incident involving your contact details"}
    made = admin.ok("post", "/v1/templates", 201, json=own)
    assert made["owner"] == "incident-response" and made["version"] == 1
    w = _incident(admin, session, runtime)
    inv, incident = w["investigator"], w["incident"]
    inv.ok("post", f"/v1/incidents/{incident['id']}/contain", json={"reason": "confirmed"})
    inv.ok(
        "patch",
        "/v1/report/controller",
        json={"name": "Example Market", "dpo_email": "privacy@market.example"},
    )
    first = inv.ok("post", f"/v1/incidents/{incident['id']}/notices", 201)
    assert first["new_customers"] == 3
    versions = [
        t for t in admin.ok("get", "/v1/templates")["items"] if t["name"] == "breach-notice"
    ]
    assert [(t["version"], t["subject"]) for t in versions] == [(1, own["subject"])]
