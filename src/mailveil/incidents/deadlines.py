"""Who must be told of a breach, by when: one row per obligation (an authority, the people,
an attorney general, a NIS2 CSIRT) for every place the affected people live in, each with
its deadline counted from the moment of awareness, its condition, and where it stands
(submitted, decided against with a reason, due, overdue).

The clock starts at awareness for every law: GDPR's "becoming aware", the US states'
"discovery" or "determination" of the breach. Under GDPR a controller with its main
establishment in the EEA reports once, to the lead authority (Art. 56); one without reports
to the authority of each member state where affected people live (EDPB Guidelines 9/2022).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailveil.config import Settings
from mailveil.incidents import wording as w
from mailveil.incidents.jurisdictions import (
    AUTHORITY,
    EEA,
    INDIVIDUALS,
    RULES,
    SUPERVISORY_AUTHORITIES,
    Rule,
)

REVIEW = "review"  # a place whose rule the table does not hold: counsel decides
NIS2_STEPS = (
    ("early_warning", "early warning", 24, "within 24 hours of becoming aware (Art. 23(4)(a))"),
    (
        "incident_notification",
        "incident notification",
        72,
        "within 72 hours of becoming aware (Art. 23(4)(b))",
    ),
    (
        "final_report",
        "final report",
        None,
        "within one month of the incident notification (Art. 23(4)(d))",
    ),
)
NIS2_SOURCE = "Directive (EU) 2022/2555 (NIS2) Art. 23(1), (3), (4); Annex II point 6"


@dataclass(frozen=True)
class Filing:
    """What was done about one obligation: its first submission and phase count, or the
    decision in force."""

    first_submitted_at: datetime | None = None
    phases: int = 0
    final: bool = False
    decision_notify: bool | None = None
    decision_reason: str = ""
    decided_at: datetime | None = None


def add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _row(
    key: str,
    *,
    place: str,
    place_name: str,
    regime: str,
    audience: str,
    recipient: str,
    people: int,
    rule: str,
    sources: tuple[str, ...] | list[str],
    due_at: datetime | None,
    applies: str = "yes",
    condition: str = "",
) -> dict[str, Any]:
    return {
        "key": key,
        "place": place,
        "place_name": place_name,
        "regime": regime,
        "audience": audience,
        "recipient": recipient,
        "people": people,
        "rule": rule,
        "sources": list(sources),
        "due_at": due_at,
        "applies": applies,
        "condition": condition,
    }


def _gdpr_rows(
    counts: Mapping[str, int], establishment: str, aware: datetime
) -> list[dict[str, Any]]:
    eea = {c: n for c, n in counts.items() if c in EEA and n}
    if not eea:
        return []
    rows = []
    due = aware + timedelta(hours=72)
    if establishment in EEA:
        name, authority = SUPERVISORY_AUTHORITIES[establishment]
        rule = RULES[establishment]
        rows.append(
            _row(
                "EEA:authority",
                place="EEA",
                place_name="EU/EEA (lead authority)",
                regime="GDPR",
                audience=AUTHORITY,
                recipient=f"{authority}, lead supervisory authority ({name})",
                people=sum(eea.values()),
                rule=rule.authority_when,
                sources=rule.sources,
                due_at=due,
            )
        )
    else:
        for code in sorted(eea, key=lambda c: (-eea[c], c)):
            rule = RULES[code]
            rows.append(
                _row(
                    f"{code}:authority",
                    place=code,
                    place_name=rule.name,
                    regime=rule.regime,
                    audience=AUTHORITY,
                    recipient=rule.authority,
                    people=eea[code],
                    rule=rule.authority_when,
                    sources=rule.sources,
                    due_at=due,
                    condition=""
                    if establishment
                    else "the main establishment is not recorded: "
                    "without one in the EEA, each member state's authority is told",
                )
            )
    first = RULES[next(iter(sorted(eea)))]
    rows.append(
        _row(
            "EEA:individuals",
            place="EEA",
            place_name="EU/EEA",
            regime="GDPR",
            audience=INDIVIDUALS,
            recipient="the affected people",
            people=sum(eea.values()),
            rule=first.individuals_when,
            sources=first.sources,
            due_at=None,
            applies="conditional",
            condition="only when the breach is likely to result in a high risk (Art. 34(1))",
        )
    )
    return rows


def _place_rows(rule: Rule, people: int, aware: datetime) -> list[dict[str, Any]]:
    if not rule.known:
        return [
            _row(
                f"{rule.code}:{REVIEW}",
                place=rule.code,
                place_name=rule.name,
                regime=rule.regime,
                audience=REVIEW,
                recipient="counsel",
                people=people,
                rule=rule.authority_when,
                sources=(),
                due_at=None,
                applies="unknown",
                condition="rule unknown, check counsel",
            )
        ]
    covered = (
        ""
        if rule.email_alone_covered
        else f"only if the data are personal information under {rule.regime}: {rule.covered}"
    )
    if rule.authority_hours is not None:
        authority_due: datetime | None = aware + timedelta(hours=rule.authority_hours)
    elif rule.authority_days is not None:
        authority_due = aware + timedelta(days=rule.authority_days)
    else:
        authority_due = None
    below = people < rule.authority_threshold
    rows = [
        _row(
            f"{rule.code}:{rule.authority_kind}",
            place=rule.code,
            place_name=rule.name,
            regime=rule.regime,
            audience=rule.authority_kind,
            recipient=rule.authority,
            people=people,
            rule=rule.authority_when,
            sources=rule.sources,
            due_at=authority_due,
            applies="below threshold" if below else ("conditional" if covered else "yes"),
            condition=(
                f"{w.plural(people, 'resident')} affected; the threshold is "
                f"{rule.authority_threshold:,}"
                if below
                else covered
            ),
        ),
        _row(
            f"{rule.code}:{INDIVIDUALS}",
            place=rule.code,
            place_name=rule.name,
            regime=rule.regime,
            audience=INDIVIDUALS,
            recipient="the affected people",
            people=people,
            rule=rule.individuals_when,
            sources=rule.sources,
            due_at=(
                aware + timedelta(days=rule.individuals_days)
                if rule.individuals_days is not None
                else None
            ),
            applies="conditional" if covered or rule.authority_kind == AUTHORITY else "yes",
            condition=covered
            or ("only under the law's risk test" if rule.authority_kind == AUTHORITY else ""),
        ),
    ]
    return rows


def _nis2_rows(settings: Settings, aware: datetime, people: int) -> list[dict[str, Any]]:
    if settings.nis2_entity == "none":
        return []
    recipient = settings.nis2_authority or "the CSIRT or competent authority (not recorded)"
    if settings.nis2_member_state:
        recipient += f", {settings.nis2_member_state}"
    rows = []
    for step, label, hours, rule in NIS2_STEPS:
        rows.append(
            _row(
                f"NIS2:{step}",
                place="NIS2",
                place_name=f"NIS2 ({settings.nis2_entity} entity): {label}",
                regime="NIS2",
                audience=step,
                recipient=recipient,
                people=people,
                rule=rule,
                sources=(NIS2_SOURCE,),
                # The final report counts from the incident notification: from its
                # deadline until one is recorded (``standing`` moves it).
                due_at=aware + timedelta(hours=hours)
                if hours
                else add_months(aware + timedelta(hours=72), 1),
                applies="conditional",
                condition="only for a significant incident (Art. 23(3))",
            )
        )
    return rows


def obligations(
    *,
    settings: Settings,
    aware: datetime,
    people_by_place: Mapping[str, int],
    establishment: str,
) -> list[dict[str, Any]]:
    """Every obligation for the places affected people live in (``people_by_place`` is
    keyed by ``jurisdictions.place_of``), before looking at what was done."""
    rows = _gdpr_rows(people_by_place, establishment, aware)
    # Known rules first (outside the US, then US states), places without a rule last.
    for code in sorted(people_by_place, key=lambda c: (not RULES[c].known, c.startswith("US"), c)):
        if code in EEA or not people_by_place[code]:
            continue
        rows.extend(_place_rows(RULES[code], people_by_place[code], aware))
    rows.extend(_nis2_rows(settings, aware, sum(people_by_place.values())))
    return rows


def standing(
    rows: list[dict[str, Any]],
    filings: Mapping[str, Filing],
    *,
    now: datetime,
    tz: ZoneInfo,
    people_told_at: datetime | None,
) -> list[dict[str, Any]]:
    """Each row with its status and words: what was done, or what is due and when."""
    out = []
    nis2_notified = filings.get("NIS2:incident_notification")
    for row in rows:
        row = dict(row)
        due: datetime | None = row["due_at"]
        if row["key"] == "NIS2:final_report" and nis2_notified and nis2_notified.first_submitted_at:
            due = add_months(nis2_notified.first_submitted_at, 1)
        filing = filings.get(row["key"], Filing())
        status, words = _status(row, filing, due, now, tz, people_told_at)
        row.update(
            due_at=due.isoformat() if due else None,
            due_text=w.when(due, tz) if due else _no_fixed(row),
            status=status,
            status_text=words,
        )
        out.append(row)
    return out


def _no_fixed(row: dict[str, Any]) -> str:
    return "rule unknown" if row["audience"] == REVIEW else "no fixed deadline"


def _status(
    row: dict[str, Any],
    filing: Filing,
    due: datetime | None,
    now: datetime,
    tz: ZoneInfo,
    people_told_at: datetime | None,
) -> tuple[str, str]:
    if filing.decision_notify is False:
        return "not_notifying", (
            f"decided not to notify on {w.when(filing.decided_at, tz)}: {filing.decision_reason}"
        )
    first = filing.first_submitted_at
    if row["audience"] == INDIVIDUALS and people_told_at is not None and first is None:
        first = people_told_at
    if first is not None:
        late = due is not None and first > due
        timing = f"late by {w.duration(first - due)}" if late and due else "on time"
        if due is None:
            timing = ""
        phases = f", {w.plural(filing.phases, 'phase')}" if filing.phases > 1 else ""
        final = ", final report filed" if filing.final else ""
        verb = "people told" if row["audience"] == INDIVIDUALS else "submitted"
        text = f"{verb} {w.when(first, tz)}" + (f" ({timing})" if timing else "")
        return ("late" if late else "done"), text + phases + final
    if row["applies"] == "below threshold":
        return "not_required", f"not required: {row['condition']}"
    if row["applies"] == "unknown":
        return "check_counsel", "rule unknown, check counsel"
    if due is None:
        return "no_fixed_deadline", "no fixed deadline; act without undue delay"
    if now > due:
        return "overdue", w.due_words(due, now)
    return "due", w.due_words(due, now)


def next_deadline(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The earliest open deadline (due or overdue), for the report's clock."""
    open_rows = [r for r in rows if r["status"] in ("due", "overdue") and r["due_at"]]
    return min(open_rows, key=lambda r: str(r["due_at"])) if open_rows else None


__all__ = [
    "NIS2_SOURCE",
    "REVIEW",
    "Filing",
    "add_months",
    "next_deadline",
    "obligations",
    "standing",
]
