"""Notifications through the API (no delivery): facts, templates and lint, preview, the
blast-radius guard and its second approver, the kill switch, bad input; both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from api_testkit import Api

NOW = datetime.now(UTC)
RULE = {
    "require": [{"kind": "registry.gift_purchased", "as": "gift", "within_days": 7}],
    "owns": [{"fact": "gift", "attr": "registry_id", "kind": "registry.created"}],
}


def template(**changes: Any) -> dict[str, Any]:
    return {
        "name": "registry-gift",
        "category": "transactional",
        "subject": "Someone bought a gift from your registry",
        "body": "Hello,\n\nsomeone bought {{ facts.gift.item }} for registry "
        "{{ facts.gift.registry_id }}.\n",
        "sensitivity": ["pregnancy"],
        "suppression_list": "baby-registry",
        "reviewer": "Rita Reviewer",
        "owner": "notifier",
        "expected_volume": 2,
        "rule": RULE,
        **changes,
    }


def world(admin: Api, backend: Api) -> None:
    admin.principal("service", "notifier")
    for n in range(1, 7):
        admin.customer(f"c{n}", f"person{n}@example.com")
    at = (NOW - timedelta(days=1)).isoformat()
    lines = []
    for n in (1, 2):
        lines.append({"id": f"reg-{n}", "kind": "registry.created", "customer": f"c{n}",
                      "time": at, "attributes": {"registry_id": f"R{n}"}})  # fmt: skip
        gift = {"registry_id": f"R{n}", "item": "a bear"}
        lines.append({"id": f"gift-{n}", "kind": "registry.gift_purchased", "customer": f"c{n}",
                      "time": at, "attributes": gift})  # fmt: skip
    # c3 has a gift for someone else's registry.
    lines.append({"id": "gift-3", "kind": "registry.gift_purchased", "customer": "c3",
                  "time": at, "attributes": {"registry_id": "R1", "item": "a bear"}})  # fmt: skip
    body = "\n".join(json.dumps(x) for x in lines) + "\n"
    r = backend.post("/v1/facts", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    results = [json.loads(x) for x in r.text.splitlines()]
    assert {x["status"] for x in results} == {"created"}


def test_facts_single_bulk_and_errors(admin: Api, backend: Api) -> None:
    world(admin, backend)
    one = {"id": "ship-1", "kind": "order.shipped", "customer": "c1", "time": NOW.isoformat()}
    assert backend.ok("post", "/v1/facts", 201, json=one)["kind"] == "order.shipped"
    assert backend.ok("post", "/v1/facts", 200, json=one)["id"] == "ship-1"  # same again
    changed = {**one, "attributes": {"carrier": "x"}}
    assert backend.post("/v1/facts", json=changed).json()["type"].endswith("conflict")
    assert (
        backend.post("/v1/facts", json={**one, "id": "s2", "customer": "nobody"}).status_code == 404
    )
    assert (
        backend.post("/v1/facts", json={**one, "id": "s3", "kind": "Bad Kind"}).status_code == 422
    )
    body = (
        b'{"id": "x1", "kind": "a.b", "customer": "c1", "time": "2026-01-01T00:00:00Z"}\nnot json\n'
    )
    r = backend.post("/v1/facts", content=body, headers={"Content-Type": "application/x-ndjson"})
    statuses = [json.loads(x)["status"] for x in r.text.splitlines()]
    assert statuses == ["created", "error"]
    assert backend.ok("get", "/v1/facts/x1")["customer"] == "c1"


def test_lint_blocks_and_warnings_need_a_person(admin: Api, backend: Api) -> None:
    world(admin, backend)
    bad = backend.ok("post", "/v1/templates", 201, json=template(
        body="Your account was tarminated. Integration test email. {first_name} "
             "{{ facts.other.x }} Visit https://evil.example/login now",
        category="security", sensitivity=["pregnancy"], suppression_list=None,
        reviewer=None))  # fmt: skip
    codes = {f["code"] for f in bad["findings"] if f["level"] == "error"}
    assert {
        "spelling",
        "test-marker",
        "unresolved-placeholder",
        "unbound-fact",
        "link-in-notice",
        "sensitive-needs-suppression",
        "sensitive-needs-reviewer",
    } <= codes
    assert not bad["sendable"]
    assert any("terminated" in f["message"] for f in bad["findings"] if f["code"] == "spelling")
    market = backend.ok("post", "/v1/templates", 201, json=template(
        name="promo", category="marketing", sensitivity=[], body="Deals for you."))  # fmt: skip
    assert "missing-unsubscribe" in {f["code"] for f in market["findings"]}
    escape = backend.ok("post", "/v1/templates", 201, json=template(
        name="escape", body="{{ ''.__class__.__mro__ }}"))  # fmt: skip
    assert "sandbox-escape" in {f["code"] for f in escape["findings"]}
    # Errors cannot be acknowledged; warnings can, by a named person.
    r = admin.post("/v1/templates/registry-gift/versions/1/acknowledge", json={"person": "Ann"})
    assert r.status_code == 409
    loud = backend.ok("post", "/v1/templates", 201, json=template(
        name="loud", subject="Gift for your registry!!"))  # fmt: skip
    assert not loud["sendable"] and {f["level"] for f in loud["findings"]} == {"warning"}
    audience = {"customers": [{"customer": "c1"}]}
    r = backend.post("/v1/sends", json={"template": "loud", "audience": audience})
    assert r.status_code == 409
    acked = admin.ok("post", "/v1/templates/loud/versions/1/acknowledge", json={"person": "Ann"})
    assert acked["sendable"] and acked["acknowledged_by"] == "Ann"


def test_preview_counts_reasons_and_evidence(admin: Api, backend: Api) -> None:
    world(admin, backend)
    assert backend.ok("post", "/v1/templates", 201, json=template())["sendable"]
    backend.ok(
        "post", "/v1/suppressions", 201, json={"scope": "list:baby-registry", "customer": "c2"}
    )
    audience = {"customers": [
        {"customer": "c1"}, {"customer": "c2"}, {"customer": "c3"}, {"customer": "c4"},
        {"customer": "c5", "facts": ["gift-1"]}, {"customer": "c6", "facts": ["nope"]},
        {"customer": "ghost"}]}  # fmt: skip
    p = backend.ok("post", "/v1/sends?preview=true", 200,
                   json={"template": "registry-gift", "audience": audience})  # fmt: skip
    assert p["counts"] == {"eligible": 1, "ineligible": 5, "suppressed": 1, "capped": 0}
    reasons = " | ".join(p["reasons"])
    assert "fact belongs to another customer" in reasons and "unknown fact" in reasons
    assert "is not the recipient's" in reasons and "unknown customer" in reasons
    assert p["would_halt_at_first_stage"] is True
    assert p["rendered"][0]["subject"] == "Someone bought a gift from your registry"
    assert "a bear" in p["rendered"][0]["body"]
    # Nothing was stored or sent.
    assert backend.get("/v1/sends/1").status_code == 404
    query = {"query": {"kind": "registry.gift_purchased"}}
    q = backend.ok("post", "/v1/sends?preview=true", 200,
                   json={"template": "registry-gift", "audience": query})  # fmt: skip
    assert q["audience"] == 3 and q["counts"]["eligible"] == 1


def test_blast_radius_needs_a_second_person_and_kill(admin: Api, backend: Api) -> None:
    world(admin, backend)
    backend.ok("post", "/v1/templates", 201, json=template(expected_volume=None))
    audience = {"customers": [{"customer": "c1"}, {"customer": "c2"}]}
    send = backend.ok(
        "post", "/v1/sends", 201, json={"template": "registry-gift", "audience": audience}
    )
    assert send["status"] == "awaiting_approval" and send["eligible"] == 2
    assert "no send history" in send["approval_reason"]
    assert backend.post(f"/v1/sends/{send['id']}/start").status_code == 409
    # The creator cannot approve its own send (a backend key cannot approve at all).
    assert backend.post(f"/v1/sends/{send['id']}/approve").status_code == 403
    approved = admin.ok("post", f"/v1/sends/{send['id']}/approve")
    assert approved["status"] == "ready" and approved["approved_by"].startswith("apikey:")
    killed = backend.ok("post", f"/v1/sends/{send['id']}/kill")
    assert killed["status"] == "killed"
    assert backend.post(f"/v1/sends/{send['id']}/start").status_code == 409
    assert backend.post(f"/v1/sends/{send['id']}/kill").status_code == 409


def test_bad_input(admin: Api, backend: Api) -> None:
    world(admin, backend)
    backend.ok("post", "/v1/templates", 201, json=template())
    assert (
        backend.post(
            "/v1/sends", json={"template": "nope", "audience": {"customers": [{"customer": "c1"}]}}
        ).status_code
        == 404
    )
    for audience in ({}, {"customers": []}, {"customers": [{"who": "c1"}]}, {"query": {"kind": 5}}):
        r = backend.post("/v1/sends", json={"template": "registry-gift", "audience": audience})
        assert r.status_code == 422, audience
    r = backend.post("/v1/templates", json=template(rule={"require": []}))
    assert r.status_code == 422
    r = backend.post("/v1/templates", json=template(owner="no-such-service"))
    assert r.status_code == 404
    r = backend.post("/v1/templates", json=template(body="{% for %}"))
    assert "template-syntax" in {f["code"] for f in r.json()["findings"]}


def test_the_approver_sees_the_targeting_and_a_halting_send_needs_their_word(
    admin: Api, backend: Api
) -> None:
    world(admin, backend)
    backend.ok("post", "/v1/templates", 201, json=template(expected_volume=None))
    everyone = {"customers": [{"customer": f"c{n}"} for n in range(1, 7)]}
    body = {"template": "registry-gift", "audience": everyone}
    seen = backend.ok("post", "/v1/sends?preview=true", 200, json=body)
    # Two of six have a gift for their own registry; the rule reaches three (c3's gift is
    # for someone else's registry: `owns` is not in the population's upper bound).
    aim = seen["targeting"]
    assert (aim["verdict"], aim["rule_population"], aim["eligible"]) == ("mis-targeted", 3, 2)
    assert "mis-targeted" in seen["approval_reason"] and seen["would_halt_at_first_stage"]
    send = backend.ok("post", "/v1/sends", 201, json=body)
    assert send["targeting"]["verdict"] == "mis-targeted"
    assert send["forecast"]["gate"] == "ineligible" and send["forecast"]["ineligible"] == 4
    refused = admin.post(f"/v1/sends/{send['id']}/approve")
    assert refused.status_code == 409 and refused.json()["type"].endswith("send-would-halt")
    assert "4 of 6" in refused.json()["detail"]
    approved = admin.ok("post", f"/v1/sends/{send['id']}/approve", json={"despite_forecast": True})
    assert approved["status"] == "ready"

    # A send to exactly the rule's population reads as consistent.
    two = {"customers": [{"customer": "c1"}, {"customer": "c2"}]}
    right = backend.ok("post", "/v1/sends?preview=true", 200,
                       json={"template": "registry-gift", "audience": two})  # fmt: skip
    assert right["targeting"]["verdict"] == "consistent" and not right["would_halt_at_first_stage"]


def test_lint_catches_a_bare_test_and_spells_each_language_in_its_own(
    admin: Api, backend: Api
) -> None:
    world(admin, backend)
    for subject in ("TEST", "[test] Someone bought a gift", "Test: a gift from your registry"):
        got = backend.ok("post", "/v1/templates", 201, json=template(subject=subject))
        assert "test-marker" in {f["code"] for f in got["findings"]}, subject
    prose = backend.ok("post", "/v1/templates", 201,
                       json=template(subject="Your test results are in your registry"))  # fmt: skip
    assert "test-marker" not in {f["code"] for f in prose["findings"]}
    german = {"subject": "Jemand hat ein Geschenk aus Ihrer Liste gekauft",
              "body": "Hallo,\n\njemand hat {{ facts.gift.item }} für die Liste "
                      "{{ facts.gift.registry_id }} gekauft.\n\nViele Grüße\n"}  # fmt: skip
    both = backend.ok("post", "/v1/templates", 201, json=template(translations={"de": german}))
    assert both["findings"] == [] and both["sendable"], both["findings"]
    assert both["language"] == "en" and set(both["translations"]) == {"de"}
    # German text checked as English is full of "misspellings"; as German it is clean.
    as_english = backend.ok("post", "/v1/templates", 201,
                            json=template(**german, name="registry-gift-de"))  # fmt: skip
    assert len([f for f in as_english["findings"] if f["code"] == "spelling"]) >= 5
    in_german = template(**german, name="registry-gift-de", language="de")
    as_german = backend.ok("post", "/v1/templates", 201, json=in_german)
    assert as_german["findings"] == []
    typo = {**german, "body": german["body"].replace("Geschenk", "Geschenck")}
    typo["subject"] = typo["subject"].replace("Geschenk", "Geschenck")
    bad = backend.ok("post", "/v1/templates", 201, json=template(translations={"de": typo}))
    assert [f["message"][:4] for f in bad["findings"] if f["code"] == "spelling"] == ["[de]"]
    unknown = backend.post("/v1/templates", json=template(language="xx"))
    assert unknown.status_code == 422 and "must be one of" in unknown.json()["detail"]


def test_a_correction_template_needs_no_rule_and_cannot_start_a_send(
    admin: Api, backend: Api
) -> None:
    world(admin, backend)
    sorry = template(name="registry-sorry", rule=None, subject="About our earlier message",
                     body="Hello,\n\nplease disregard our earlier message.\n")  # fmt: skip
    got = backend.ok("post", "/v1/templates", 201, json=sorry)
    assert got["sendable"] and got["findings"] == [] and got["rule"] == {}
    audience = {"customers": [{"customer": "c1"}]}
    refused = backend.post("/v1/sends", json={"template": "registry-sorry", "audience": audience})
    assert refused.status_code == 409 and "only be used to correct" in refused.json()["detail"]


def test_an_audience_too_large_for_json_is_uploaded_as_ndjson(admin: Api, backend: Api) -> None:
    world(admin, backend)
    backend.ok("post", "/v1/templates", 201, json=template(expected_volume=100_000))
    named = [{"customer": f"c{n}"} for n in range(1, 60_001)]  # c7.. do not exist
    as_json = {"template": "registry-gift", "audience": {"customers": named}}
    assert len(json.dumps(as_json)) > 1024 * 1024
    assert backend.post("/v1/sends?preview=true", json=as_json).status_code == 413
    body = "".join(json.dumps(e) + "\n" for e in named)
    ndjson = {"Content-Type": "application/x-ndjson"}
    seen = backend.post("/v1/sends/ndjson?template=registry-gift&preview=true", content=body,
                        headers=ndjson)  # fmt: skip
    assert seen.status_code == 200, seen.text
    got = seen.json()
    assert got["audience_source"] == "ndjson" and got["audience"] == 60_000
    assert (
        got["counts"]["eligible"] == 2 and got["reasons"]["ineligible: unknown customer"] == 59_994
    )
    bad = body[:100] + '{"customer": "c9", "colour": "red"}\n'
    r = backend.post("/v1/sends/ndjson?template=registry-gift", content=bad, headers=ndjson)
    assert r.status_code == 422 and r.json()["detail"].startswith("line "), r.text
    small = '{"customer": "c1"}\n{"customer": "c2", "language": "en"}\n'
    made = backend.post("/v1/sends/ndjson?template=registry-gift", content=small, headers=ndjson)
    assert made.status_code == 201 and made.json()["eligible"] == 2, made.text
