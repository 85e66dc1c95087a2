"""The report to a supervisory authority (GDPR Article 33 and rules like it): the nature of
the breach, the categories and approximate numbers of people and records, the likely
consequences, the measures taken, the contact point, and the 72-hour clock from detection.
Built from the incident, its blast radius and the ledger; exported as JSON and as an HTML
document a person reads."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.detect.incidents import NOTIFY_WITHIN, get_incident, incident_view
from mailveil.detect.models import Signal
from mailveil.incidents.blast import blast_radius, culprits_of
from mailveil.ledger.models import LedgerEntry

SIGNAL_WORDS = {
    "stranger_at_alias": (
        "mail sent to customers' private aliases by someone they were not given to"
    ),
    "canary_hit": "mail sent to planted canary customers",
    "abuse_report": "customers' reports of unsolicited mail",
    "access_anomaly": "unusual access to customer records by staff",
    "access_refusals": "repeated refused attempts to access customer records",
}


def contact_point(settings: Settings) -> str:
    return settings.breach_contact or f"privacy@{settings.relay_domain}"


def _measures(session: Session, incident_id: int) -> list[dict[str, Any]]:
    out = []
    for e in session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.subject == f"incident:{incident_id}")
        .order_by(LedgerEntry.seq)
    ):
        detail = json.loads(e.detail)
        if e.kind == "incident_action":
            out.append(
                {
                    "at": e.time.isoformat(),
                    "what": (
                        f"{detail.get('action')}: {len(detail.get('suspended', []))} principal(s) "
                        f"suspended, {detail.get('aliases_revoked', 0)} alias(es) and "
                        f"{detail.get('reveals_revoked', 0)} reveal grant(s) revoked, "
                        f"{detail.get('sends_cancelled', 0)} send(s) cancelled"
                    ),
                }
            )
        elif e.kind == "incident_status":
            out.append(
                {
                    "at": e.time.isoformat(),
                    "what": (
                        f"status {detail.get('from')} -> {detail.get('to')}: {detail.get('reason')}"
                    ),
                }
            )
        elif e.kind == "notice":
            out.append(
                {"at": e.time.isoformat(), "what": "breach notices sent to affected customers"}
            )
    return out


def regulator_report(
    session: Session,
    settings: Settings,
    incident_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    incident = get_incident(session, incident_id)
    view = incident_view(session, incident)
    sources = culprits_of(session, incident_id)
    radius = blast_radius(session, sources, since=since, until=until) if sources else None
    kinds = sorted(
        set(session.scalars(select(Signal.kind).where(Signal.incident_id == incident_id)))
    )
    now = utcnow()
    deadline = incident.detected_at + NOTIFY_WITHIN
    categories = []
    consequences = []
    if radius is not None and radius.customers:
        categories.append(
            {
                "category": "e-mail alias (a pseudonymous address that forwards to the customer)",
                "people": radius.customers,
                "records": radius.customers,
            }
        )
        consequences.append(
            "unsolicited e-mail (spam, catalogues) reaching the affected customers "
            "through their alias"
        )
    if radius is not None and radius.real_address:
        categories.append(
            {
                "category": "e-mail address",
                "people": radius.real_address,
                "records": radius.real_address,
            }
        )
        consequences.append(
            "unsolicited e-mail and phishing sent directly to the customers' own e-mail address"
        )
    roles = {"source": "held the data", "recipient": "received it"}
    culprit_words = [
        f"{c['kind']} {c['name'] or c['external_id']} ({roles.get(c['role'], c['role'])})"
        for c in view["culprits"]
    ]
    return {
        "incident": incident.id,
        "controller": settings.controller_name,
        "contact_point": contact_point(settings),
        "status": incident.status,
        "detected_at": incident.detected_at.isoformat(),
        "notify_authority_by": deadline.isoformat(),
        "hours_left": round((deadline - now).total_seconds() / 3600, 1),
        "overdue": now > deadline,
        "nature": {
            "summary": (
                "Customer contact data was disclosed beyond its purpose. Evidence: "
                + "; ".join(SIGNAL_WORDS.get(k, k) for k in kinds)
                + "."
            ),
            "parties": culprit_words,
            "signals": view["signal_count"],
        },
        "categories": categories,
        "people_affected": radius.customers if radius else 0,
        "people_by_region": dict(radius.by_region) if radius else {},
        "people_by_country": dict(radius.by_country) if radius else {},
        "deleted_since": radius.deleted if radius else 0,
        "likely_consequences": consequences,
        "measures_taken": _measures(session, incident_id),
        "generated_at": now.isoformat(),
    }


def _environment() -> Environment:
    return Environment(
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: dict[str, Any]) -> str:
    text = (
        resources.files("mailveil.incidents")
        .joinpath("templates/regulator_report.html")
        .read_text("utf-8")
    )
    return _environment().from_string(text).render(r=report)


__all__ = ["contact_point", "regulator_report", "render_html"]
