"""The regulator report through the API: JSON, HTML and PDF, the controller's details, the
officer's assessment, phased submissions and decisions, and the exact list of affected
people; problem JSON for bad input, roles enforced, escaped output, no address anywhere."""

from __future__ import annotations

import io
import json
from typing import Any

from api_testkit import Api, stranger_at
from pypdf import PdfReader
from sqlalchemy.orm import Session

from mailveil.incidents.proofs import verify_affected
from mailveil.runtime import Runtime


def _leak(admin: Api, session: Session, runtime: Runtime) -> tuple[Api, int, list[str]]:
    emails = ["a0@example.com", "a1@example.com", "a2@example.com"]
    customers = [
        admin.customer("c-0", emails[0], "IE"),
        admin.customer("c-1", emails[1], "US", subdivision="US-CA"),
        admin.customer("c-2", emails[2], "US", subdivision="tx"),
    ]
    assert customers[1]["subdivision"] == "CA" and customers[2]["subdivision"] == "TX"
    seller = admin.principal("seller", "s-leaky", display_name="<script>x()</script>")
    admin.principal(
        "seller", "s-spam", display_name="Spam Co", attributes={"sending_domains": ["spam.example"]}
    )
    aliases = []
    for c in customers:
        admin.order(f"o-{c['id']}", c["id"], seller["id"])
        body = {"customer_id": c["id"], "principal_id": seller["id"], "purpose": "order"}
        aliases.append(admin.ok("post", "/v1/disclosures", 201, json=body)["alias"])
    # The relay's record of a stranger's mail to one of the seller's aliases (an aligned SPF
    # pass names the sender) opens the incident when detection runs.
    stranger_at(
        runtime, session, alias=aliases[0], customer_id=customers[0]["id"], owner_id=seller["id"]
    )
    inv = admin.key_for("investigator")
    inv.ok("post", "/v1/detect/run")
    [incident] = inv.ok("get", "/v1/incidents")["items"]
    return inv, incident["id"], emails


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_the_report_from_draft_to_filed(admin: Api, session: Session, runtime: Runtime) -> None:
    inv, incident, emails = _leak(admin, session, runtime)
    base = f"/v1/incidents/{incident}/report"
    draft = inv.ok("get", base)
    assert draft["draft"] and "the incident is not confirmed yet" in draft["draft_reasons"]
    assert {m["code"] for m in draft["people"]["by_member_state"]} == {"IE"}
    assert {p["code"] for p in draft["people"]["by_place"]} == {"IE", "US-CA", "US-TX"}
    keys = {d["key"] for d in draft["deadlines"]}
    assert {"IE:authority", "US-CA:individuals", "US-TX:attorney_general"} <= keys
    # Controller details: validated (problem JSON), versioned, in force for every report.
    _problem(inv.patch("/v1/report/controller", json={"dpo_email": "nope"}), 422)
    _problem(inv.patch("/v1/report/controller", json={"colour": "red"}), 422)
    done = inv.ok(
        "patch",
        "/v1/report/controller",
        json={
            "name": "Market <Ltd>",
            "address": "1 Quay\nDublin",
            "establishment_country": "IE",
            "dpo_email": "dpo@market.example",
        },
    )
    assert done["version"] == 1 and done["missing"] == []
    _problem(inv.patch("/v1/report/controller", json={"name": "X", "version": 0}), 409)
    history = inv.ok("get", "/v1/report/controller/history")["items"]
    assert history[0]["changed"]["name"] == "Market <Ltd>"
    # A draft cannot be filed.
    first = {"obligation": "EEA:authority", "kind": "initial", "reference": "DPC-77"}
    _problem(inv.post(f"{base}/submissions", json=first), 409)
    inv.ok(
        "post", f"/v1/incidents/{incident}/status", json={"status": "confirmed", "reason": "seen"}
    )
    ready = inv.ok("get", base)
    assert not ready["draft"]
    # Assessment, then phased submissions that say what changed.
    inv.ok(
        "patch",
        f"{base}/assessment",
        json={
            "reason": "investigation",
            "severity": {"malicious": False},
            "measures_proposed": ["Audit every export"],
        },
    )
    _problem(inv.patch(f"{base}/assessment", json={"reason": "r", "severity": {"ei": 3}}), 422)
    assert inv.ok("get", f"{base}/assessment")["version"] == 1
    sub = inv.ok("post", f"{base}/submissions", 201, json=first)
    assert sub["phase"] == 1 and sub["reference"] == "DPC-77"
    inv.ok(
        "patch",
        f"{base}/assessment",
        json={"reason": "more", "measures_proposed": ["Audit every export", "Retrain staff"]},
    )
    update = inv.ok("post", f"{base}/submissions", 201, json={**first, "kind": "update"})
    assert [c["field"] for c in update["changes"]] == ["measures_proposed"]
    _problem(inv.post(f"{base}/submissions", json={**first, "obligation": "XX:y"}), 422)
    decision = {
        "obligation": "US-TX:individuals",
        "notify": False,
        "reason_code": "not_covered_data",
        "explanation": "an alias alone is not sensitive personal information in Texas",
    }
    inv.ok("post", f"{base}/decisions", 201, json=decision)
    _problem(inv.post(f"{base}/decisions", json={**decision, "reason_code": "whim"}), 422)
    assert len(inv.ok("get", f"{base}/submissions")["items"]) == 2
    assert inv.ok("get", f"{base}/decisions")["items"][0]["reason_code"] == "not_covered_data"
    filed = {d["key"]: d for d in inv.ok("get", base)["deadlines"]}
    assert filed["EEA:authority"]["status"] == "done"
    assert filed["US-TX:individuals"]["status"] == "not_notifying"
    # The documents: escaped HTML under a strict CSP, and a PDF that reads back.
    html = inv.get(f"{base}/html")
    assert (
        html.status_code == 200 and "default-src 'none'" in html.headers["content-security-policy"]
    )
    assert "&lt;script&gt;x()&lt;/script&gt;" in html.text and "<script>" not in html.text
    assert "Market &lt;Ltd&gt;" in html.text and "Audit every export" in html.text
    fragment = inv.get(f"{base}/html", params={"fragment": "true"}).text
    assert fragment.lstrip().startswith("<style>") and "<html" not in fragment
    pdf = inv.get(f"{base}/pdf")
    assert pdf.headers["content-type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Market <Ltd>" in text and "DRAFT" not in text
    # The exact list, checked from itself.
    listed = inv.get(f"{base}/affected", params={"leaves": "true"})
    assert listed.headers["content-type"].startswith("application/x-ndjson")
    lines = listed.text.splitlines()
    key = json.loads(lines[0])["checkpoint"]["verifier_key"]
    assert verify_affected(lines, verifier_key=key).ok and json.loads(lines[-1])["people"] == 3
    for email in emails:
        for body in (json.dumps(ready), html.text, listed.text, text):
            assert email not in body


def test_roles_and_missing_incidents(admin: Api) -> None:
    backend = admin.key_for("backend")
    assert backend.get("/v1/incidents/1/report").status_code == 403
    assert backend.get("/v1/report/controller").status_code == 403
    inv = admin.key_for("investigator")
    _problem(inv.get("/v1/incidents/999/report"), 404)
    _problem(inv.get("/v1/incidents/999/report/affected"), 404)
    # Settings give the first values; none are made up.
    details = inv.ok("get", "/v1/report/controller")
    assert details["source"] == "settings" and details["name"] == ""
    assert set(details["missing"]) == {"name", "address", "dpo_email"}
