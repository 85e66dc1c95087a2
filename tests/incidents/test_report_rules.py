"""The rules behind the report, without a database: the jurisdiction table, deadline
arithmetic, the ENISA score, and the words times, counts and spans are written in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailveil.config import load_settings
from mailveil.errors import InvalidInput
from mailveil.incidents import severity
from mailveil.incidents import wording as w
from mailveil.incidents.deadlines import Filing, add_months, obligations, standing
from mailveil.incidents.jurisdictions import EEA, EU, RULES, place_of

T = datetime(2026, 12, 6, 14, 3, 27, 123456, tzinfo=UTC)


def test_the_table_covers_the_eea_the_uk_and_us_states_with_sources() -> None:
    assert len(EU) == 27 and {"IS", "LI", "NO"} == EEA - EU
    for code in [*EEA, "GB", "US-CA", "US-NY", "US-TX", "US-FL", "US-WA", "US-CO"]:
        rule = RULES[code]
        assert rule.known and rule.sources and rule.authority, code
    assert {RULES[c].individuals_days for c in ("US-CA", "US-TX", "US-AZ")} == {30, 60, 45}
    assert RULES["US-TX"].authority_threshold == 250 and RULES["US-CA"].authority_threshold == 501
    # A place the table does not hold says so, never a guessed rule.
    for country, sub, key in [("US", "OH", "US"), ("US", None, "US-?"), ("JP", None, "*")]:
        assert place_of(country, sub) == key
        assert not RULES[key].known and "check counsel" in RULES[key].authority_when
    assert place_of("de", None) == "DE" and place_of("US", "ca") == "US-CA"


def test_deadlines_count_from_awareness_and_read_what_was_done() -> None:
    settings = load_settings(env={}, nis2_entity="essential")
    rows = obligations(
        settings=settings, aware=T, people_by_place={"FR": 3, "US-TX": 300}, establishment="FR"
    )
    keys = [r["key"] for r in rows]
    assert keys[:2] == ["EEA:authority", "EEA:individuals"]
    assert {"US-TX:attorney_general", "NIS2:early_warning", "NIS2:final_report"} <= set(keys)
    tz = w.zone("Europe/Paris")
    later = T + timedelta(hours=80)
    filed = {"EEA:authority": Filing(first_submitted_at=T + timedelta(hours=70), phases=2)}
    done = {r["key"]: r for r in standing(rows, filed, now=later, tz=tz, people_told_at=None)}
    assert done["EEA:authority"]["status"] == "done"
    assert done["EEA:authority"]["status_text"] == (
        "submitted 9 December 2026, 13:03 CET (UTC+1) (on time), 2 phases"
    )
    assert done["NIS2:early_warning"]["status"] == "overdue"
    assert done["NIS2:early_warning"]["status_text"] == "overdue by 56 hours"
    assert done["US-TX:attorney_general"]["status"] == "due"  # 300 >= 250, 30 days
    assert done["NIS2:final_report"]["due_at"] == add_months(T + timedelta(hours=72), 1).isoformat()
    assert add_months(datetime(2027, 1, 31, tzinfo=UTC), 1).day == 28


def test_the_enisa_score_with_its_inputs() -> None:
    facts = severity.Facts(
        real_address=0, aliases=10, kinds=frozenset({"stranger_at_alias"}), recipients_known=True
    )
    score = severity.assess(facts, {}, 10)
    assert (score["dpc"], score["ei"], score["cb"], score["score"]) == (1, 0.5, 1.0, 1.5)
    assert score["level"] == "low" and score["formula"] == "SE = DPC × EI + CB = 1 × 0.5 + 1 = 1.5"
    worst = {
        "dpc_category": {"value": "sensitive", "reason": "r"},
        "ei": {"value": "maximum", "reason": "r"},
        "integrity": {"value": "irrecoverable", "reason": "r"},
        "availability": {"value": "permanent", "reason": "r"},
    }
    top = severity.assess(facts, worst, 10)
    assert top["score"] == 6.0 and top["level"] == "very high" and top["suggests_telling_people"]
    assert severity.level_of(1.99)[0] == "low" and severity.level_of(2.0)[0] == "medium"
    assert severity.level_of(3.0)[0] == "high" and severity.level_of(4.0)[0] == "very high"
    # The context adjustment keeps DPC within 1-4.
    capped = severity.assess(facts, {"dpc_adjustment": {"value": -3, "reason": "public data"}}, 1)
    assert capped["dpc"] == 1
    with pytest.raises(InvalidInput):
        severity.check_input("ei", "huge")
    with pytest.raises(InvalidInput):
        severity.check_input("malicious", "yes")


def test_times_counts_and_spans_in_words() -> None:
    assert w.when(T) == "6 December 2026, 14:03 UTC"
    assert w.when(T, w.zone("America/New_York")) == "6 December 2026, 09:03 EST (UTC-5)"
    assert w.when(T, w.zone("Asia/Kolkata")) == "6 December 2026, 19:33 IST (UTC+5:30)"
    assert w.plural(1, "person") == "1 person" and w.plural(12408, "person") == "12,408 people"
    assert w.plural(2, "alias", "aliases") == "2 aliases" and w.plural(0, "send") == "0 sends"
    assert w.duration(timedelta(minutes=25)) == "25 minutes"
    assert w.duration(timedelta(hours=5, minutes=30)) == "5 hours and 30 minutes"
    assert w.duration(timedelta(hours=41, minutes=2)) == "41 hours"
    assert w.duration(timedelta(days=3, hours=1)) == "3 days and 1 hour"
    assert w.due_words(T + timedelta(hours=2), T) == "due in 2 hours"
    assert w.join(["a", "b", "c"]) == "a, b and c"
    with pytest.raises(InvalidInput):
        w.zone("Mars/Olympus")
