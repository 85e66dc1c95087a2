"""The regulator report on a real leak (SQLite and PostgreSQL): a draft until the incident is
confirmed and the controller's details are complete, exact counts per member state and
place, every jurisdiction's deadline from the proven moment of awareness, words instead of
machine text, the officer's assessment, phased submissions and decisions in the ledger."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from report_testkit import CONTROLLER, make_leak
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.detect.incidents import set_status
from mailveil.errors import Conflict, InvalidInput
from mailveil.incidents import filings
from mailveil.incidents.controller import controller_details, set_controller
from mailveil.incidents.regulator import regulator_report, render_html
from mailveil.incidents.report_actions import decide, submit
from mailveil.ledger import merkle
from mailveil.ledger.models import LedgerEntry

ISO_WITH_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def _confirm(session: Session, parts: Any, incident_id: int) -> None:
    _settings, _v, ledger, _p = parts
    set_status(
        session,
        ledger=ledger,
        incident_id=incident_id,
        status="confirmed",
        reason="the alias was in the spam",
        actor="apikey:1",
    )


def _controller(session: Session, parts: Any, **extra: Any) -> None:
    settings, _v, ledger, _p = parts
    set_controller(
        session, settings=settings, ledger=ledger, changes={**CONTROLLER, **extra}, actor="dpo"
    )


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["key"]: d for d in report["deadlines"]}


def test_a_draft_until_confirmed_and_complete_then_ready_to_sign(
    session: Session, parts: Any
) -> None:
    settings, _v, ledger, _p = parts
    leak = make_leak(session, parts)
    report = regulator_report(session, settings, leak.incident_id)
    assert report["draft"] is True
    assert report["draft_reasons"][0] == "the incident is not confirmed yet"
    # Nobody said the controller is established in the EEA: it needs a representative there.
    assert set(report["controller"]["missing"]) == {
        "name",
        "address",
        "dpo_email",
        "representative_name",
        "representative_address",
    }
    assert all(p["role_words"].startswith("suspected") for p in report["nature"]["parties"])
    html = render_html(report)
    assert "DRAFT — not for filing" in html and "Signature" not in html
    # Nothing made up: no default controller, no invented contact point.
    assert "the marketplace" not in html and "privacy@" not in html
    assert html.count('class="missing"') >= 3
    _controller(session, parts)
    _confirm(session, parts, leak.incident_id)
    ready = regulator_report(session, settings, leak.incident_id, ledger=ledger)
    assert ready["draft"] is False and ready["draft_reasons"] == []
    assert ready["nature"]["parties"][0]["role_words"] == "held the data and passed it on"
    html = render_html(ready)
    assert "DRAFT" not in html and "Signature" in html
    assert "Example Market GmbH" in html and "dpo@market.example" in html
    # Words, not machine text: no ISO timestamps, no "(s)", no arrows of ASCII.
    assert not ISO_WITH_SECONDS.search(html)
    assert "(s)" not in html and "->" not in html
    assert "Open (not yet confirmed) → confirmed" in html
    assert re.search(r"\d{1,2} [A-Z][a-z]+ \d{4}, \d{2}:\d{2} UTC", html)
    # Escaped: the seller's display name holds markup.
    assert "&lt;b onmouseover=" in html and "<b onmouseover" not in html
    for email in leak.emails:
        assert email not in html and email not in json.dumps(ready)


def test_exact_counts_per_member_state_and_each_jurisdictions_deadline(
    session: Session, parts: Any
) -> None:
    settings, _v, _ledger, _p = parts
    leak = make_leak(session, parts)
    _controller(session, parts)
    report = regulator_report(session, settings, leak.incident_id)
    people = report["people"]
    assert people["count"] == 9 and people["count_text"] == "9 people" and people["exact"]
    states = {m["code"]: m["people"] for m in people["by_member_state"]}
    assert states == {"DE": 2, "FR": 1, "IE": 1}
    places = {p["code"]: p["people"] for p in people["by_place"]}
    assert places == {"DE": 2, "FR": 1, "IE": 1, "GB": 1, "US-CA": 1, "US-TX": 1, "US-?": 1, "*": 1}
    aware = report["timing"]["awareness"]["at"]
    rows = _rows(report)
    from datetime import datetime

    at = datetime.fromisoformat(aware)
    # Established in Germany: one report to the lead authority for all EEA people.
    lead = rows["EEA:authority"]
    assert lead["people"] == 4 and "lead supervisory authority (Germany)" in lead["recipient"]
    assert lead["due_at"] == (at + timedelta(hours=72)).isoformat() and lead["status"] == "due"
    assert "DE:authority" not in rows
    assert rows["GB:authority"]["due_at"] == (at + timedelta(hours=72)).isoformat()
    california = rows["US-CA:individuals"]
    assert california["due_at"] == (at + timedelta(days=30)).isoformat()
    assert california["applies"] == "conditional" and "password" in california["condition"]
    assert rows["US-TX:individuals"]["due_at"] == (at + timedelta(days=60)).isoformat()
    assert rows["US-TX:attorney_general"]["status"] == "not_required"  # 1 of 250
    assert rows["US-?:review"]["status_text"] == "rule unknown, check counsel"
    assert rows["*:review"]["status"] == "check_counsel"
    assert report["clock"]["key"] in ("EEA:authority", "GB:authority")
    # Without an establishment in the EEA: every member state's authority is told.
    _controller(session, parts, establishment_country="")
    per_state = _rows(regulator_report(session, settings, leak.incident_id))
    assert {"DE:authority", "FR:authority", "IE:authority"} <= set(per_state)
    assert per_state["DE:authority"]["people"] == 2 and "EEA:authority" not in per_state
    # NIS2 when the operator says the marketplace is an important entity.
    nis2 = settings.with_overrides(nis2_entity="important", nis2_authority="CERT-Bund")
    early = _rows(regulator_report(session, nis2, leak.incident_id))["NIS2:early_warning"]
    assert early["due_at"] == (at + timedelta(hours=24)).isoformat()
    assert "significant incident" in early["condition"]


def test_awareness_is_proven_by_the_opening_entry(session: Session, parts: Any) -> None:
    settings, _v, ledger, _p = parts
    leak = make_leak(session, parts)
    report = regulator_report(session, settings, leak.incident_id, ledger=ledger)
    block = report["timing"]["awareness"]["entry"]
    entry = session.get(LedgerEntry, block["seq"])
    assert entry is not None and entry.kind == "incident_opened"
    assert json.loads(entry.detail)["incident"] == leak.incident_id
    assert report["timing"]["awareness"]["at"] == entry.time.isoformat()
    proof, checkpoint = block["proof"], report["timing"]["checkpoint"]
    root = bytes.fromhex(checkpoint["root_hash"])
    leaf = merkle.leaf_hash(entry.leaf.encode("utf-8"))
    assert leaf.hex() == proof["leaf_hash"]
    path = [bytes.fromhex(h) for h in proof["proof"]]
    merkle.verify_inclusion(entry.seq, checkpoint["tree_size"], leaf, path, root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(entry.seq - 1, checkpoint["tree_size"], leaf, path, root)
    window = report["timing"]["breach_window"]
    assert window["from_entry"]["kind"] == "disclosure"
    assert window["to_entry"]["kind"] == "stranger_at_alias"
    assert window["from"] <= window["to"] <= report["timing"]["awareness"]["at"]


def test_the_officers_assessment_moves_the_score_and_is_ledgered(
    session: Session, parts: Any
) -> None:
    settings, _v, ledger, _p = parts
    leak = make_leak(session, parts)
    before = regulator_report(session, settings, leak.incident_id)["severity"]
    assert before["score"] == 1.5 and before["level"] == "low"  # 1 x 0.5 + 0.5 + 0.5
    assert {i["source"] for i in before["inputs"]} == {"suggested"}
    values, version = filings.assess_incident(
        session,
        ledger=ledger,
        incident_id=leak.incident_id,
        changes={
            "severity": {"dpc_adjustment": 2, "ei": "maximum"},
            "measures_proposed": ["Review every seller's export rights"],
            "breach_from": "2026-11-30T09:00:00+00:00",
        },
        reason="the seller sells baby products: purchases suggest pregnancy",
        actor="apikey:3",
    )
    assert version == 1 and values["severity"]["ei"]["value"] == "maximum"
    after = regulator_report(session, settings, leak.incident_id)
    assert after["severity"]["score"] == 4.0 and after["severity"]["level"] == "very high"
    changed = {i["input"]: i for i in after["severity"]["inputs"] if i["source"] == "officer"}
    assert set(changed) == {"dpc_adjustment", "ei"}
    assert "pregnancy" in changed["ei"]["reason"] and changed["ei"]["set_by"] == "API key 3"
    assert after["measures_proposed"] == ["Review every seller's export rights"]
    assert after["timing"]["breach_window"]["from_text"] == "30 November 2026, 09:00 UTC"
    entry = session.scalar(select(LedgerEntry).where(LedgerEntry.kind == "report_assessment"))
    assert entry is not None and entry.subject == f"incident:{leak.incident_id}"
    assert json.loads(entry.detail)["changed"]["severity"] == {"dpc_adjustment": 2, "ei": "maximum"}
    # Back to the suggestion; bad values and stale versions are refused.
    filings.assess_incident(
        session,
        ledger=ledger,
        incident_id=leak.incident_id,
        changes={"severity": {"ei": None}},
        reason="undo",
        actor="dpo",
    )
    assert regulator_report(session, settings, leak.incident_id)["severity"]["score"] == 2.5
    for bad in ({"severity": {"ei": "huge"}}, {"severity": {"dpc_adjustment": 9}}, {"x": 1}):
        with pytest.raises(InvalidInput):
            filings.assess_incident(
                session,
                ledger=ledger,
                incident_id=leak.incident_id,
                changes=bad,
                reason="r",
                actor="dpo",
            )
    with pytest.raises(Conflict):
        filings.assess_incident(
            session,
            ledger=ledger,
            incident_id=leak.incident_id,
            changes={"nature": "x"},
            reason="r",
            actor="dpo",
            expected_version=1,
        )


def test_phased_submissions_say_what_changed_and_decisions_hold(
    session: Session, parts: Any
) -> None:
    settings, _v, ledger, _p = parts
    leak = make_leak(session, parts)
    common = {"settings": settings, "ledger": ledger, "incident_id": leak.incident_id}
    _controller(session, parts)
    with pytest.raises(Conflict, match="draft"):  # not confirmed yet
        submit(session, obligation="EEA:authority", kind="initial", actor="dpo", **common)
    _confirm(session, parts, leak.incident_id)
    with pytest.raises(InvalidInput, match="not in this report"):
        submit(session, obligation="JP:authority", kind="initial", actor="dpo", **common)
    with pytest.raises(Conflict, match="initial"):
        submit(session, obligation="EEA:authority", kind="update", actor="dpo", **common)
    first = submit(
        session, obligation="EEA:authority", kind="initial", actor="dpo", reference="DE-1", **common
    )
    assert first.phase == 1 and first.changes == []
    filings.assess_incident(
        session,
        ledger=ledger,
        incident_id=leak.incident_id,
        changes={"measures_proposed": ["Retrain the support team"]},
        reason="phase 2",
        actor="dpo",
    )
    second = submit(session, obligation="EEA:authority", kind="update", actor="dpo", **common)
    assert [c["field"] for c in second.changes] == ["measures_proposed"]
    assert second.changes[0]["after"] == ["Retrain the support team"]
    submit(session, obligation="EEA:authority", kind="final", actor="dpo", **common)
    with pytest.raises(Conflict, match="final"):
        submit(session, obligation="EEA:authority", kind="update", actor="dpo", **common)
    decide(
        session,
        obligation="US-CA:individuals",
        notify=False,
        reason_code="not_covered_data",
        explanation="an e-mail alias alone is not personal information under § 1798.82(h)",
        actor="dpo",
        **common,
    )
    with pytest.raises(InvalidInput):
        decide(
            session,
            obligation="US-CA:individuals",
            notify=False,
            reason_code="required",
            explanation="a notify reason for not notifying",
            actor="dpo",
            **common,
        )
    report = regulator_report(session, settings, leak.incident_id)
    rows = _rows(report)
    assert rows["EEA:authority"]["status"] == "done"
    assert "on time" in rows["EEA:authority"]["status_text"]
    assert "3 phases, final report filed" in rows["EEA:authority"]["status_text"]
    assert rows["US-CA:individuals"]["status"] == "not_notifying"
    assert "not personal information" in rows["US-CA:individuals"]["status_text"]
    kinds = [
        e.kind
        for e in session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.subject == f"incident:{leak.incident_id}")
            .order_by(LedgerEntry.seq)
        )
    ]
    assert kinds.count("report_submission") == 3 and kinds.count("report_decision") == 1
    assert "measures_proposed" in render_html(report)  # what changed, in the submissions table


def test_controller_details_are_validated_versioned_and_ledgered(
    session: Session, parts: Any
) -> None:
    settings, _v, ledger, _p = parts
    seeded = settings.with_overrides(controller_name="Seeded Ltd", breach_contact="not an address")
    from_settings = controller_details(session, seeded)
    assert from_settings.source == "settings" and from_settings.values["name"] == "Seeded Ltd"
    assert "dpo_email" in from_settings.missing() and "dpo_email" in from_settings.invalid
    with pytest.raises(InvalidInput, match="e-mail"):
        set_controller(
            session, settings=seeded, ledger=ledger, changes={"dpo_email": "x@"}, actor="dpo"
        )
    with pytest.raises(InvalidInput, match="country"):
        set_controller(
            session,
            settings=seeded,
            ledger=ledger,
            changes={"establishment_country": "XX"},
            actor="dpo",
        )
    first = set_controller(
        session, settings=seeded, ledger=ledger, changes={"address": "1 Road\r\nTown"}, actor="dpo"
    )
    assert first.version == 1 and first.values["name"] == "Seeded Ltd"
    assert first.values["address"] == "1 Road\nTown"
    with pytest.raises(Conflict):
        set_controller(
            session,
            settings=seeded,
            ledger=ledger,
            changes={"name": "Other"},
            actor="dpo",
            expected_version=0,
        )
    entries = list(
        session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "report_controller"))
    )
    assert len(entries) == 1 and json.loads(entries[0].detail)["changed"] == {
        "address": "1 Road\nTown"
    }
