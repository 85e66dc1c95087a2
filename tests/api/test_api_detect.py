"""Detection through the API: abuse reports attributed exactly by alias or ranked by guilt
for real addresses, incidents with their culprits, timeline and an evidence bundle that
verifies alone; the reporter is only ever told the report was received."""

from __future__ import annotations

import json
import random
from email.message import EmailMessage
from typing import Any

from api_testkit import Api, stranger_at
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.detect.evidence import verify_bundle
from mailveil.detect.models import AbuseReport
from mailveil.runtime import Runtime


def _spam(to: str, sender: str = "deals@spam.example") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Great Deals <{sender}>"
    msg["To"] = to
    msg["Subject"] = "You won a prize"
    msg["Message-ID"] = "<spam-1@spam.example>"
    msg["Date"] = "Tue, 24 Nov 2026 10:00:00 +0000"
    msg["Received"] = (
        "from mx.spam.example ([203.0.113.9]) by mx.mail.example; Tue, 24 Nov 2026 10:00:01 +0000"
    )
    msg.set_content("Click here to claim it.")
    return msg


def _forward(original: EmailMessage, reporter: str) -> bytes:
    report = EmailMessage()
    report["From"] = reporter
    report["To"] = "report-abuse@relay.mailveil.localhost"
    report["Subject"] = "Fwd: You won a prize"
    report.set_content("This is spam, please look into it.")
    report.add_attachment(original)
    return report.as_bytes()


def _upload(backend: Api, customer_id: int, raw: bytes) -> Any:
    return backend.post(
        "/v1/reports",
        params={"customer_id": customer_id},
        content=raw,
        headers={"Content-Type": "message/rfc822"},
    )


def _shop(admin: Api) -> tuple[Any, Any, str]:
    """A customer, the seller "s-leaky" she ordered from, and her alias for it."""
    cust = admin.customer("c-1", "victim@example.com")
    seller = admin.principal("seller", "s-leaky", display_name="Leaky Shop")
    admin.order("o-1", cust["id"], seller["id"])
    alias = admin.disclosure(cust["id"], seller["id"])["alias"]
    return cust, seller, alias


def test_a_report_of_spam_at_an_alias_corroborates_the_relays_record_with_evidence(
    admin: Api, session: Session, runtime: Runtime
) -> None:
    backend = admin.key_for("backend")
    investigator = admin.key_for("investigator")
    cust, seller, alias = _shop(admin)
    seq = stranger_at(runtime, session, alias=alias, customer_id=cust["id"], owner_id=seller["id"])
    answer = _upload(backend, cust["id"], _forward(_spam(alias), "victim@example.com"))
    assert answer.status_code == 202
    body = answer.json()
    assert body["received"] is True and set(body) == {"report_id", "received", "message"}
    assert "Leaky" not in answer.text and alias not in answer.text
    [report] = investigator.ok("get", "/v1/reports")["items"]
    assert (report["outcome"], report["corroborates_entry"]) == ("attributed", seq)
    assert f"ledger entry {seq}" in report["reason"]
    assert investigator.ok("post", "/v1/detect/run")["signals"] == {"stranger_at_alias": 1}
    [incident] = investigator.ok("get", "/v1/incidents")["items"]
    named = [
        (c["external_id"], c["role"], c["strength"], c["confirmation_required"])
        for c in incident["culprits"]
    ]
    assert named == [("s-leaky", "source", "relay-record", False)]
    detail = investigator.ok("get", f"/v1/incidents/{incident['id']}")
    [signal] = detail["signals"]
    assert signal["kind"] == "stranger_at_alias" and signal["alias"] == alias
    assert signal["strength"] == {"source": "relay-record", "recipient": "authenticated"}
    assert [p["principal_id"] for p in signal["pieces"] if p["role"] == "recipient"] == [None]
    bundle = investigator.ok("get", f"/v1/incidents/{incident['id']}/evidence")
    check = verify_bundle(bundle, verifier_key=runtime.ledger.signer.verifier_key)
    assert check.ok, check.checks
    assert bundle["culprits"][0]["strength"] == "relay-record"
    assert bundle["claims"][0]["pieces"][0]["basis"] == "alias-disclosure"
    assert "victim@example.com" not in json.dumps(bundle) + json.dumps(detail)
    kinds = [
        e["kind"]
        for e in investigator.ok("get", f"/v1/incidents/{incident['id']}/timeline")["items"]
    ]
    assert kinds[:3] == ["stranger_at_alias", "incident_opened", "signal"]
    investigator.ok(
        "post",
        f"/v1/incidents/{incident['id']}/status",
        json={"status": "confirmed", "reason": "alias leak"},
    )
    assert backend.get("/v1/incidents").status_code == 403
    assert backend.get("/v1/reports").status_code == 403


def test_a_report_of_an_alias_the_relay_has_no_record_of_accuses_no_one(
    admin: Api, session: Session
) -> None:
    """A customer knows their own alias: fabricated "spam" to it is a claim, kept with its
    reason, and listed (filters and paging) but never an incident."""
    backend = admin.key_for("backend")
    investigator = admin.key_for("investigator")
    cust, _seller, alias = _shop(admin)
    for _ in range(3):
        _upload(backend, cust["id"], _forward(_spam(alias), "victim@example.com"))
    assert investigator.ok("post", "/v1/detect/run")["signals"] == {}
    assert investigator.ok("get", "/v1/incidents")["items"] == []
    page = investigator.ok("get", "/v1/reports", params={"outcome": "unconfirmed", "limit": 2})
    assert [r["outcome"] for r in page["items"]] == ["unconfirmed", "unconfirmed"]
    assert "no record" in page["items"][0]["reason"]
    rest = investigator.ok("get", "/v1/reports", params={"after": page["next"], "limit": 2})
    assert len(rest["items"]) == 1 and rest["next"] is None
    assert investigator.ok("get", "/v1/reports", params={"verified": "false"})["items"] == []
    assert investigator.get("/v1/reports", params={"outcome": "nonsense"}).status_code == 422
    one = investigator.ok("get", f"/v1/reports/{rest['items'][0]['id']}")
    assert one["reference"] == f"R-{one['id']}"
    assert investigator.get("/v1/reports/999999").status_code == 404
    assert "victim@example.com" not in json.dumps(page) + json.dumps(one)


def test_reports_without_an_original_or_about_someone_else_accuse_no_one(
    admin: Api, session: Session
) -> None:
    backend = admin.key_for("backend")
    cust = admin.customer("c-1", "victim@example.com")
    other = admin.customer("c-2", "other@example.com")
    seller = admin.principal("seller", "s-1")
    admin.order("o-1", other["id"], seller["id"])
    alias = admin.disclosure(other["id"], seller["id"])["alias"]
    assert _upload(backend, cust["id"], b"\x00\xff not a message at all").status_code == 202
    plain = b"From: victim@example.com\r\nSubject: spam!\r\n\r\nI got spam, help.\r\n"
    assert _upload(backend, cust["id"], plain).status_code == 202
    # c-1 reporting mail sent to c-2's alias: not theirs, no accusation.
    assert (
        _upload(backend, cust["id"], _forward(_spam(alias), "victim@example.com")).status_code
        == 202
    )
    outcomes = sorted(session.scalars(select(AbuseReport.outcome)).all())
    assert outcomes == ["no_original", "rejected", "unattributed"]
    assert admin.key_for("investigator").ok("get", "/v1/incidents")["items"] == []
    assert _upload(backend, 999_999, _forward(_spam(alias), "x@example.com")).status_code == 404
    assert backend.post("/v1/reports", params={"customer_id": cust["id"]}).status_code == 422


def test_reports_to_real_addresses_rank_the_leaking_principal_first(
    admin: Api, session: Session
) -> None:
    backend = admin.key_for("backend")
    rng = random.Random(7)
    customers = [admin.customer(f"c-{n}", f"buyer{n}@example.com") for n in range(200)]
    sellers = [admin.principal("seller", f"s-{n}", display_name=f"Shop {n}") for n in range(5)]
    spammer = admin.principal(
        "seller", "s-spam", display_name="Spam Co", attributes={"sending_domains": ["spam.example"]}
    )
    saw: dict[int, list[int]] = {}
    for s in sellers:
        picked = rng.sample(range(200), 25)
        saw[s["id"]] = picked
        for n in picked:
            admin.order(f"o-{s['id']}-{n}", customers[n]["id"], s["id"])
            admin.disclosure(customers[n]["id"], s["id"])
    leaky = sellers[2]
    # The spammer's own buyer reports too: explained by a relationship, never evidence.
    own = customers[saw[sellers[0]["id"]][0]]
    admin.order("o-own", own["id"], spammer["id"])
    reporters = [own] + [customers[n] for n in saw[leaky["id"]][:10]]
    for c in reporters:
        n = customers.index(c)
        assert (
            _upload(
                backend, c["id"], _forward(_spam(f"buyer{n}@example.com"), f"buyer{n}@example.com")
            ).status_code
            == 202
        )
    outcomes = set(session.scalars(select(AbuseReport.outcome)).all())
    assert outcomes == {"real_address"}
    investigator = admin.key_for("investigator")
    signals = investigator.ok("get", "/v1/signals", params={"kind": "abuse_report"})["items"]
    assert len(signals) == 1
    [signal] = signals
    assert signal["confidence"] == "ranked"
    assert signal["source_principal_id"] == leaky["id"]
    # The spam's From names the spammer's domain, but it reached real addresses the relay
    # never saw: a claimed sender, shown, never a culprit.
    assert signal["recipient_principal_id"] is None
    assert signal["strength"] == {"source": "statistical", "recipient": "claimed"}
    by_role = {p["role"]: p for p in signal["pieces"]}
    assert (by_role["source"]["counted"], by_role["source"]["weak"]) == (True, True)
    assert by_role["source"]["score"] == signal["score"]
    assert (by_role["recipient"]["principal_id"], by_role["recipient"]["counted"]) == (
        spammer["id"],
        False,
    )
    [incident] = investigator.ok("get", "/v1/incidents")["items"]
    assert [(c["principal_id"], c["confirmation_required"]) for c in incident["culprits"]] == [
        (leaky["id"], True)
    ]
    ranking = signal["evidence"]["ranking"]
    assert ranking["explained"] >= 1
    assert ranking["ranked"][0]["principal_id"] == leaky["id"]
    assert ranking["ranked"][0]["overlap"] >= 5  # filed once beyond chance
    text = json.dumps(signal)
    assert "@example.com" not in text


def test_mail_claiming_to_be_from_the_relay_without_its_record_accuses_no_one(
    admin: Api, session: Session
) -> None:
    """A From on a reverse alias is header text: without the relay's record of the message
    (its Message-ID, VERP token or a delivery between that pair) the report is a claim.
    Real relayed mail reported in every shape is tested through the relay
    (tests/relay/test_relay_framing.py)."""
    backend = admin.key_for("backend")
    seller = admin.principal("seller", "s-news", display_name="Newsletter Shop")
    for n in range(8):
        c = admin.customer(f"c-{n}", f"buyer{n}@example.com")
        admin.order(f"o-{n}", c["id"], seller["id"])
        reverse = admin.disclosure(c["id"], seller["id"])["reverse_alias"]
        mail = _spam(f"buyer{n}@example.com", sender=reverse)
        raw = _forward(mail, f"buyer{n}@example.com")
        assert _upload(backend, c["id"], raw).status_code == 202
    assert set(session.scalars(select(AbuseReport.outcome)).all()) == {"unconfirmed"}
    investigator = admin.key_for("investigator")
    assert investigator.ok("get", "/v1/signals")["items"] == []
    assert investigator.ok("get", "/v1/incidents")["items"] == []
