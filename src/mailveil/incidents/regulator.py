"""The report to the supervisory authorities (GDPR Art. 33 and the rules like it), built from
the incident, its blast radius, the privacy officer's records and the ledger.

For the console, the API and the CLI:

- ``regulator_report(session, settings, incident_id, *, ledger=None, now=None) -> dict``:
  the report's data, JSON-ready. Every time has an ISO value and a ``*_text`` in words;
  ``draft`` and ``draft_reasons`` say whether it can be filed. Pass the ``Ledger``
  to prove fresh entries against a checkpoint signed now (it writes one: commit
  after); without it proofs use the newest signed or witnessed checkpoint covering them.
- ``render_html(report, *, fragment=False) -> str``: the document (``fragment=True``: the
  ``<article>`` alone, with its styles, to embed in a page). Everything is escaped.
- ``report_pdf.render_pdf(report) -> bytes``: the same document as PDF.
- ``summary(report) -> dict``: the report in words, section by section, for a page that
  lists what it is given (the console's report page).
- ``snapshot(report) -> dict``: the stable content a submission records.
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.detect.incidents import get_incident, incident_view
from mailveil.detect.models import Signal
from mailveil.incidents import deadlines, filings, proofs, severity
from mailveil.incidents import wording as w
from mailveil.incidents.blast import BlastRadius, blast_radius, culprits_of
from mailveil.incidents.controller import LABELS, controller_details
from mailveil.incidents.jurisdictions import EEA, RULES, SUPERVISORY_AUTHORITIES, place_of
from mailveil.incidents.narrative import Actors, history_and_measures, people_told
from mailveil.ledger.append import Ledger
from mailveil.ledger.models import LedgerEntry

FORMAT = "mailveil-regulator-report/2"
SIGNAL_WORDS = {
    "stranger_at_alias": "mail sent to customers' private aliases by someone they were not "
    "given to",
    "canary_hit": "mail sent to planted canary customers",
    "abuse_report": "customers' reports of unsolicited mail",
    "access_anomaly": "unusual access to customer records by staff",
    "access_refusals": "repeated refused attempts to access customer records",
    "send_gate_failed": "a notification send that failed its safety gate",
}
ROLE_WORDS = {"source": "held the data and passed it on", "recipient": "received the data"}
DISCLAIMER = (
    "Prepared with mailveil from the incident's ledger. It is not legal advice: the deadlines "
    "come from a table of laws that counsel should review, and the severity score supports "
    "the privacy officer's judgment, it does not replace it."
)


def _people_by_place(radius: BlastRadius | None) -> dict[str, int]:
    out: dict[str, int] = {}
    if radius is None:
        return out
    for country, n in radius.by_country.items():
        if country.upper() == "US":
            known = {k: c for k, c in radius.by_subdivision.items() if k.startswith("US-")}
            for code, count in known.items():
                place = place_of("US", code[3:])
                out[place] = out.get(place, 0) + count
            rest = n - sum(known.values())
            if rest:
                out["US-?"] = out.get("US-?", 0) + rest
            continue
        place = place_of(country, None)
        out[place] = out.get(place, 0) + n
    return out


def _entry_block(entry: LedgerEntry | None, proof: dict[str, Any] | None, tz: Any) -> Any:
    if entry is None:
        return None
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "at": entry.time.isoformat(),
        "at_text": w.when(entry.time, tz),
        "proof": proof,
    }


def _timing(
    session: Session,
    settings: Settings,
    ledger: Ledger | None,
    incident_id: int,
    sources: tuple[int, ...],
    officer: dict[str, Any],
    tz: Any,
) -> tuple[dict[str, Any], datetime]:
    opened = proofs.opened_entry(session, incident_id)
    evidence = proofs.first_evidence(session, incident_id)
    exposed = proofs.first_exposure(session, sources)
    found = [e for e in (opened, evidence, exposed) if e is not None]
    checkpoint = (
        proofs.proof_checkpoint(session, settings, ledger, max(e.seq for e in found) + 1)
        if found
        else None
    )
    proved = {p["seq"]: p for p in proofs.prove_entries(session, found, checkpoint)}
    section: dict[str, Any] | None = None
    if checkpoint is not None and ledger is not None:
        section = proofs.checkpoint_section(
            session, settings, checkpoint, ledger.signer.verifier_key
        )
    elif checkpoint is not None:
        root = checkpoint.root.hex()
        section = {"tree_size": checkpoint.tree_size, "root_hash": root, "note": checkpoint.note}
    incident = get_incident(session, incident_id)
    aware_at = opened.time if opened is not None else incident.detected_at
    window_from = exposed.time if exposed is not None else None
    window_to = evidence.time if evidence is not None else aware_at
    stated_from = officer.get("breach_from")
    stated_to = officer.get("breach_to")
    return (
        {
            "awareness": {
                "at": aware_at.isoformat(),
                "at_text": w.when(aware_at, tz),
                "basis": "the first ledger entry that made the incident known (incident opened "
                "on its first evidence); every deadline counts from it",
                "entry": _entry_block(opened, proved.get(opened.seq) if opened else None, tz),
                "first_evidence": _entry_block(
                    evidence, proved.get(evidence.seq) if evidence else None, tz
                ),
            },
            "breach_window": {
                "from": stated_from or (window_from.isoformat() if window_from else None),
                "to": stated_to or window_to.isoformat(),
                "from_text": w.when(datetime.fromisoformat(stated_from), tz)
                if stated_from
                else (w.when(window_from, tz) if window_from else "not known"),
                "to_text": w.when(datetime.fromisoformat(stated_to), tz)
                if stated_to
                else w.when(window_to, tz),
                "source": "officer" if (stated_from or stated_to) else "ledger",
                "basis": officer.get("breach_basis")
                or "between the first time a culprit was given an affected person's data and "
                "the first evidence of its misuse",
                "from_entry": _entry_block(
                    exposed, proved.get(exposed.seq) if exposed else None, tz
                ),
                "to_entry": _entry_block(
                    evidence, proved.get(evidence.seq) if evidence else None, tz
                ),
            },
            "detected_at": incident.detected_at.isoformat(),
            "checkpoint": section,
        },
        aware_at,
    )


def _nature(
    session: Session,
    incident_id: int,
    view: dict[str, Any],
    confirmed: bool,
    officer: dict[str, Any],
) -> tuple[dict[str, Any], frozenset[str]]:
    kinds = frozenset(session.scalars(select(Signal.kind).where(Signal.incident_id == incident_id)))
    confidence = sorted(
        set(session.scalars(select(Signal.confidence).where(Signal.incident_id == incident_id)))
    )
    parties = [
        {
            "name": c["name"] or c["external_id"],
            "kind": c["kind"],
            "external_id": c["external_id"],
            "role": c["role"],
            "role_words": ("" if confirmed else "suspected: ")
            + ROLE_WORDS.get(c["role"], c["role"]),
            "evidence": w.plural(int(c["evidence"]), "piece of evidence", "pieces of evidence"),
        }
        for c in view["culprits"]
    ]
    summary = "Customer contact data was disclosed beyond its purpose."
    if kinds:
        summary += " Evidence: " + w.join([SIGNAL_WORDS.get(k, k) for k in sorted(kinds)]) + "."
    return (
        {
            "summary": summary,
            "officer": officer.get("nature", ""),
            "evidence_kinds": sorted(kinds),
            "confidence": confidence,
            "signals": w.plural(
                int(view["signal_count"]), "piece of evidence", "pieces of evidence"
            ),
            "parties": parties,
            "parties_confirmed": confirmed,
        },
        kinds,
    )


def _people(
    radius: BlastRadius | None, by_place: dict[str, int], incident_id: int
) -> dict[str, Any]:
    count = radius.customers if radius else 0
    eea = sorted(
        ((c, n) for c, n in (radius.by_country.items() if radius else []) if c in EEA),
        key=lambda x: (-x[1], x[0]),
    )
    return {
        "count": count,
        "count_text": w.plural(count, "person"),
        "alias_only": radius.alias_only if radius else 0,
        "real_address": radius.real_address if radius else 0,
        "deleted_since": radius.deleted if radius else 0,
        "by_member_state": [
            {
                "code": c,
                "name": SUPERVISORY_AUTHORITIES[c][0],
                "authority": SUPERVISORY_AUTHORITIES[c][1],
                "people": n,
                "people_text": w.plural(n, "person"),
            }
            for c, n in eea
        ],
        "by_place": [
            {
                "code": code,
                "name": RULES[code].name,
                "people": n,
                "people_text": w.plural(n, "person"),
                "rule_known": RULES[code].known,
            }
            for code, n in sorted(by_place.items(), key=lambda x: (-x[1], x[0]))
        ],
        "exact": True,
        "verify": {
            "api": f"GET /v1/incidents/{incident_id}/report/affected",
            "cli": f"mailveil incidents report affected {incident_id} --out affected.ndjson",
            "check": "mailveil incidents report verify-affected affected.ndjson "
            "--key <verifier key>",
            "how": "the list names every affected person by internal and external id (never an "
            "address), each with the ledger entries that put them in the blast radius and "
            "their inclusion proofs against a signed checkpoint",
        },
    }


def _categories(radius: BlastRadius | None) -> tuple[list[dict[str, Any]], list[str]]:
    categories, consequences = [], []
    if radius is not None and radius.alias_only:
        categories.append(
            {
                "category": "e-mail alias (a private address that forwards to the person)",
                "people": radius.alias_only,
                "people_text": w.plural(radius.alias_only, "person"),
            }
        )
        consequences.append(
            "unsolicited e-mail (spam, catalogues, phishing) reaching the people through "
            "their alias"
        )
    if radius is not None and radius.real_address:
        categories.append(
            {
                "category": "e-mail address",
                "people": radius.real_address,
                "people_text": w.plural(radius.real_address, "person"),
            }
        )
        consequences.append(
            "unsolicited e-mail and phishing sent directly to the people's own e-mail address"
        )
    return categories, consequences


def _sources(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each place's sources once (a place has several rows, one per recipient)."""
    names = {"EEA": "EU/EEA", "NIS2": "NIS2"}
    out: dict[str, dict[str, Any]] = {}
    for d in rows:
        if d["sources"] and d["place"] not in out:
            name = names.get(d["place"]) or RULES[d["place"]].name
            out[d["place"]] = {"place": name, "sources": d["sources"]}
    return list(out.values())


def regulator_report(
    session: Session,
    settings: Settings,
    incident_id: int,
    *,
    ledger: Ledger | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The report's data (see the module's docstring)."""
    incident = get_incident(session, incident_id)
    tz = w.zone(settings.report_timezone)
    now = now or utcnow()
    view = incident_view(session, incident)
    sources = culprits_of(session, incident_id)
    radius = blast_radius(session, sources, sample=0) if sources else None
    by_place = _people_by_place(radius)
    controller = controller_details(session, settings)
    eea_people = sum(n for c, n in by_place.items() if c in EEA)
    establishment = controller.values.get("establishment_country", "")
    needs_rep = eea_people > 0 and establishment not in EEA
    officer, assessment_version = filings.assessment_values(session, incident_id)

    draft_reasons = []
    if incident.status == "open":
        draft_reasons.append("the incident is not confirmed yet")
    elif incident.status == "dismissed":
        draft_reasons.append("the incident was dismissed: it is not a breach")
    missing = controller.missing(needs_representative=needs_rep)
    draft_reasons += [f"missing: {LABELS[f]}" for f in missing]
    draft = bool(draft_reasons)

    timing, aware_at = _timing(session, settings, ledger, incident_id, sources, officer, tz)
    confirmed = incident.status in ("confirmed", "contained", "closed")
    nature, kinds = _nature(session, incident_id, view, confirmed, officer)
    categories, consequences = _categories(radius)
    actors = Actors(session)
    history, measures = history_and_measures(session, incident_id, tz, actors)
    told = people_told(session, incident_id, tz)
    told_at = next(
        (
            datetime.fromisoformat(r["at"])
            for r in told["rounds"]
            if r["send_status"] in ("running", "completed")
        ),
        None,
    )
    subs = filings.submissions(session, incident_id)
    decs = filings.decisions(session, incident_id)
    rows = deadlines.obligations(
        settings=settings, aware=aware_at, people_by_place=by_place, establishment=establishment
    )
    standing = deadlines.standing(
        rows, filings.filings_by_obligation(subs, decs), now=now, tz=tz, people_told_at=told_at
    )
    clock = deadlines.next_deadline(standing)
    facts = severity.Facts(
        real_address=radius.real_address if radius else 0,
        aliases=radius.customers if radius else 0,
        kinds=kinds,
        recipients_known=any(c["role"] == "recipient" for c in view["culprits"]),
    )
    score = severity.assess(facts, officer.get("severity", {}), radius.customers if radius else 0)
    for item in score["inputs"]:
        if item["set_by"]:
            item["set_by"] = actors.words(item["set_by"])
            item["set_at_text"] = w.when(datetime.fromisoformat(item["set_at"]), tz)
    return {
        "format": FORMAT,
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "status": incident.status,
            "status_words": w.status_words(incident.status),
        },
        "draft": draft,
        "draft_reasons": draft_reasons,
        "generated_at": now.isoformat(),
        "generated_at_text": w.when(now, tz),
        "timezone": tz.key,
        "controller": {
            **controller.to_dict(),
            "missing": missing,
            "missing_labels": [LABELS[f] for f in missing],
            "needs_representative": needs_rep,
            "establishment_name": RULES[establishment].name if establishment in RULES else "",
        },
        "timing": timing,
        "clock": (
            {
                "key": clock["key"],
                "recipient": clock["recipient"],
                "due_at": clock["due_at"],
                "due_text": clock["due_text"],
                "status_text": clock["status_text"],
                "overdue": clock["status"] == "overdue",
            }
            if clock
            else None
        ),
        "nature": nature,
        "categories": categories,
        "people": _people(radius, by_place, incident_id),
        "likely_consequences": consequences + list(officer.get("consequences", [])),
        "measures_taken": measures,
        "measures_proposed": list(officer.get("measures_proposed", [])),
        "severity": score,
        "assessment_version": assessment_version,
        "deadlines": standing,
        "sources": _sources(standing),
        "people_told": told,
        "submissions": [
            {**filings.submission_view(s), "submitted_at_text": w.when(s.submitted_at, tz)}
            for s in subs
        ],
        "decisions": [
            {
                **filings.decision_view(d),
                "decided_at_text": w.when(d.decided_at, tz),
                "by": actors.words(d.actor),
            }
            for d in decs
        ],
        "status_history": history,
        "disclaimer": DISCLAIMER,
    }


def snapshot(report: dict[str, Any]) -> dict[str, Any]:
    """What a submission records: the report's content, without what changes by itself
    (the time it was generated, the clocks, the proofs, the filings)."""
    timing = report["timing"]
    return {
        "incident": report["incident"],
        "controller": {k: report["controller"].get(k, "") for k in LABELS},
        "awareness": timing["awareness"]["at"],
        "breach_window": {k: timing["breach_window"][k] for k in ("from", "to", "basis")},
        "nature": {k: report["nature"][k] for k in ("summary", "officer", "evidence_kinds")},
        "parties": [
            {k: p[k] for k in ("name", "kind", "external_id", "role")}
            for p in report["nature"]["parties"]
        ],
        "categories": {c["category"]: c["people"] for c in report["categories"]},
        "people": {
            "count": report["people"]["count"],
            "deleted_since": report["people"]["deleted_since"],
            "by_place": {p["code"]: p["people"] for p in report["people"]["by_place"]},
        },
        "likely_consequences": report["likely_consequences"],
        "measures_taken": [m["what"] for m in report["measures_taken"]],
        "measures_proposed": report["measures_proposed"],
        "severity": {
            "score": report["severity"]["score"],
            "level": report["severity"]["level"],
            "inputs": {i["input"]: i["value"] for i in report["severity"]["inputs"]},
        },
        "people_told": report["people_told"]["text"],
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report in words, section by section, for a page that lists what it is given (the
    console): no hashes, no ISO times; the documents carry the rest."""
    timing, clock = report["timing"], report["clock"]
    aware = timing["awareness"]
    entry = aware["entry"]
    window = timing["breach_window"]
    return {
        "status": (
            "DRAFT, not for filing: " + "; ".join(report["draft_reasons"])
            if report["draft"]
            else "ready to sign and file"
        ),
        "people_affected": f"{report['people']['count_text']} (an exact count)",
        "per_member_state": [
            {"member_state": m["name"], "authority": m["authority"], "people": m["people"]}
            for m in report["people"]["by_member_state"]
        ],
        "became_aware": aware["at_text"] + (f" (ledger entry {entry['seq']})" if entry else ""),
        "breach_window": f"{window['from_text']} to {window['to_text']}",
        "next_deadline": f"{clock['recipient']}, by {clock['due_text']} ({clock['status_text']})"
        if clock
        else None,
        "deadlines": [
            {
                "recipient": d["recipient"],
                "place": f"{d['place_name']} ({d['regime']})",
                "people": d["people"],
                "due": d["due_text"],
                "where_it_stands": d["status_text"],
            }
            for d in report["deadlines"]
        ],
        "severity": f"{report['severity']['level']}: {report['severity']['formula']}",
        "people_told": report["people_told"]["text"],
        "measures_taken": [f"{m['at_text']}: {m['what']}" for m in report["measures_taken"]],
        "measures_proposed": report["measures_proposed"],
        "submissions": [
            {
                "submitted": s["submitted_at_text"],
                "to": s["obligation"],
                "phase": f"{s['phase']} ({s['kind']})",
                "changed": ", ".join(c["field"] for c in s["changes"]) or "—",
            }
            for s in report["submissions"]
        ],
        "decisions": [
            {
                "decided": d["decided_at_text"],
                "about": d["obligation"],
                "decision": "notify" if d["notify"] else "do not notify",
                "reason": f"{d['reason']}: {d['explanation']}",
            }
            for d in report["decisions"]
        ],
        "controller": {
            "name": report["controller"]["name"] or None,
            "contact_point": report["controller"]["dpo_email"] or None,
            "missing": report["controller"]["missing_labels"],
        },
    }


def _environment() -> Environment:
    env = Environment(
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["plural"] = w.plural
    return env


def _template(name: str) -> str:
    return resources.files("mailveil.incidents").joinpath(f"templates/{name}").read_text("utf-8")


def render_html(report: dict[str, Any], *, fragment: bool = False) -> str:
    """The report as an HTML document, or (``fragment``) the ``<article>`` to embed."""
    template = _environment().from_string(_template("regulator_report.html"))
    return template.render(r=report, fragment=fragment, css=_template("regulator_report.css"))


__all__ = ["DISCLAIMER", "FORMAT", "regulator_report", "render_html", "snapshot", "summary"]
