"""Incident response through the API: blast radius (incident and dry run), containment of
every culprit, the regulator report whose numbers are the blast radius's, and notices."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from api_testkit import Api


def _report(alias: str) -> bytes:
    spam = EmailMessage()
    spam["From"] = "deals@spam.example"
    spam["To"] = alias
    spam["Subject"] = "prize"
    spam.set_content("click")
    report = EmailMessage()
    report["From"] = "someone@example.com"
    report["Subject"] = "Fwd: prize"
    report.set_content("spam")
    report.add_attachment(spam)
    return report.as_bytes()


def _incident(admin: Api) -> dict[str, Any]:
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
    backend = admin.key_for("backend")
    r = backend.post(
        "/v1/reports",
        params={"customer_id": customers[0]["id"]},
        content=_report(aliases[0]),
        headers={"Content-Type": "message/rfc822"},
    )
    assert r.status_code == 202
    investigator = admin.key_for("investigator")
    [incident] = investigator.ok("get", "/v1/incidents")["items"]
    return {
        "investigator": investigator,
        "incident": incident,
        "seller": seller,
        "spammer": spammer,
        "aliases": aliases,
        "customers": customers,
    }


def test_blast_radius_containment_and_regulator_report(admin: Api) -> None:
    w = _incident(admin)
    inv, incident = w["investigator"], w["incident"]
    radius = inv.ok("get", f"/v1/incidents/{incident['id']}/blast-radius")
    assert radius["customers"] == 3 and radius["by_region"] == {"EEA": 2, "NA": 1}
    dry = inv.ok("get", "/v1/blast-radius", params={"principal_id": [w["seller"]["id"]]})
    assert dry["customers"] == 3
    done = inv.ok(
        "post", f"/v1/incidents/{incident['id']}/contain", json={"reason": "confirmed leak"}
    )
    # The source and the recipient the spam came from are both suspended.
    assert done["suspended"] == [w["seller"]["id"], w["spammer"]["id"]]
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


def test_containment_of_an_already_suspended_principal_still_revokes(admin: Api) -> None:
    w = _incident(admin)
    inv, incident = w["investigator"], w["incident"]
    admin.ok("post", f"/v1/principals/{w['seller']['id']}/suspend", json={"reason": "early"})
    done = inv.ok("post", f"/v1/incidents/{incident['id']}/contain", json={"reason": "confirmed"})
    assert done["already_suspended"] == [w["seller"]["id"]] and done["aliases_revoked"] == 0
    bad = inv.get("/v1/blast-radius", params={"principal_id": [424242]})
    assert bad.status_code == 422


def test_notices_for_a_contained_incident(admin: Api) -> None:
    w = _incident(admin)
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
