"""Breach notices: the built-in notice (the elements breach-notification laws ask for: what
happened, when, what data, what the company did, what the person can do, whom to contact;
GDPR Art. 34 and the common elements of US state laws), filled per customer with that
customer's own facts and sent through the guarded send path with incident membership as the
evidence.

Membership is an ``incident.affected`` fact per customer (id ``incident-<n>-c<customer>``),
made from the blast radius; the send's audience names each customer with that fact, so the
notification area checks the evidence like any other. Facts are idempotent: a customer
already given a notice for the incident is never sent a second one, and a later notice
round reaches only customers found since. Operators can register a new version of the
template (same name, the incident-response service as owner); the lint still applies, and a
version that fails it is not sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Customer, Principal
from mailveil.contacts.principals import create_principal
from mailveil.detect.incidents import get_incident
from mailveil.errors import Conflict, InvalidInput, NotFound
from mailveil.incidents.blast import culprits_of, exposures
from mailveil.incidents.controller import LABELS, controller_details
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.notify.audience import Entry
from mailveil.notify.facts import ingest_batch
from mailveil.notify.models import Fact, Send, Template
from mailveil.notify.sends import create_send
from mailveil.notify.templates import get_template, register_template, sendable
from mailveil.policy.facts import chunks

SERVICE = "incident-response"
TEMPLATE = "breach-notice"
FACT_KIND = "incident.affected"

EXPOSED_WORDS = {
    "alias": (
        "the private e-mail alias we had given a seller or one of our staff so they could "
        "reach you (not your own e-mail address)"
    ),
    "real_address": "your e-mail address",
}

BUILT_IN: dict[str, Any] = {
    "name": TEMPLATE,
    "category": "legal",
    "subject": "Important: a security incident involving your contact details",
    "body": (
        "Hello,\n\n"
        "we are writing to tell you about a security incident that involved your contact "
        "details. We are sorry that this happened.\n\n"
        "What happened: {{ facts.affected.what_happened }}\n\n"
        "When: the details were exposed from {{ facts.affected.exposed_since }}. We detected "
        "the incident on {{ facts.affected.detected }}.\n\n"
        "What was exposed: {{ facts.affected.exposed }}. No passwords or payment details were "
        "involved.\n\n"
        "What we have done: we stopped the people involved from reaching you, cancelled the "
        "addresses they held, and told the data protection authority.\n\n"
        "What you can do: be careful with messages that ask for personal details or payment, "
        "and do not open links or attachments in unexpected mail. You do not need to change "
        "your password. If you receive suspicious mail, forward it to us.\n\n"
        "Whom to contact: {{ facts.affected.contact }}\n\n"
        "{{ facts.affected.controller }}\n"
    ),
    "owner": SERVICE,
    "rule": {"require": [{"kind": FACT_KIND, "as": "affected"}]},
    "words": ["unsubscribe"],
}


@dataclass(frozen=True)
class NoticeRound:
    incident_id: int
    send_id: int | None
    new_customers: int  # affected customers told for the first time in this round
    already_told: int
    deleted: int  # affected but since deleted: cannot be reached
    status: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "send_id": self.send_id,
            "new_customers": self.new_customers,
            "already_told": self.already_told,
            "deleted_since": self.deleted,
            "send_status": self.status,
        }


def ensure_service(session: Session) -> Principal:
    """The incident-response service principal, created on first use (a fresh install's
    first principal is the operator's own, so the README's ids hold)."""
    found = session.scalar(
        select(Principal).where(Principal.kind == "service", Principal.external_id == SERVICE)
    )
    if found is not None:
        return found
    return create_principal(
        session, kind="service", external_id=SERVICE, display_name="Incident response"
    )


def ensure_template(session: Session, settings: Settings, actor: str) -> Any:
    """The latest version of the notice (registering the built-in one on first use)."""
    ensure_service(session)
    try:
        return get_template(session, TEMPLATE)
    except NotFound:
        return register_template(session, settings, BUILT_IN, actor=actor)


def is_notice_send(session: Session, send: Send) -> bool:
    """Whether a send carries breach notices (the responders who prepared it may start it)."""
    template = session.get(Template, send.template_id)
    return template is not None and template.name == TEMPLATE


def fact_id(incident_id: int, customer_id: int) -> str:
    return f"incident-{incident_id}-c{customer_id}"


def prepare_notices(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    incident_id: int,
    actor: str,
    what_happened: str | None = None,
) -> NoticeRound:
    """Make the membership facts of customers not yet told and create the notice send
    (it waits for a second person's approval, like any send over its expected volume).
    Does not commit; start the send as any other."""
    incident = get_incident(session, incident_id)
    if incident.status not in ("confirmed", "contained"):
        raise Conflict(
            f"incident {incident_id} is {incident.status}: notices follow a confirmed incident"
        )
    sources = culprits_of(session, incident_id)
    if not sources:
        raise InvalidInput(f"incident {incident_id} names no source: no one to notify")
    controller = controller_details(session, settings)
    lacking = [f for f in ("name", "dpo_email") if f in controller.missing()]
    if lacking:
        raise InvalidInput(
            "a breach notice names the controller and whom to contact; missing: "
            + ", ".join(LABELS[f] for f in lacking)
            + " (`mailveil incidents report controller set`)"
        )
    template = ensure_template(session, settings, actor)
    sendable(template)  # a version failing lint is refused before anything is stored
    summary = what_happened or (
        "someone who had been given a way to reach you passed your contact details on to "
        "others without permission, who then sent you unwanted mail"
    )
    records: list[tuple[int, Any]] = []
    wanted: list[tuple[int, str]] = []
    deleted = 0
    line = 0
    for exposure in exposures(session, sources):
        if exposure.deleted:
            deleted += 1
            continue
        wanted.append((exposure.customer_id, "real_address" if exposure.real_address else "alias"))
    told: set[str] = set()
    ids = [fact_id(incident_id, cid) for cid, _ in wanted]
    for id_part in chunks(ids):
        told.update(session.scalars(select(Fact.fact_id).where(Fact.fact_id.in_(id_part))))
    externals: dict[int, str] = {}
    for part in chunks([cid for cid, _ in wanted]):
        for cid, ext in session.execute(
            select(Customer.id, Customer.external_id).where(Customer.id.in_(part))
        ):
            externals[cid] = ext
    entries: list[Entry] = []
    for cid, kind in wanted:
        fid = fact_id(incident_id, cid)
        if fid in told:
            continue
        line += 1
        records.append(
            (
                line,
                {
                    "id": fid,
                    "kind": FACT_KIND,
                    "customer": externals[cid],
                    "time": incident.detected_at.isoformat(),
                    "attributes": {
                        "incident": incident_id,
                        "what_happened": summary,
                        "exposed": EXPOSED_WORDS[kind],
                        "exposed_since": "the time they were given to them",
                        "detected": incident.detected_at.strftime("%d %B %Y"),
                        "contact": controller.contact_point,
                        "controller": controller.values["name"],
                    },
                },
            )
        )
        entries.append(Entry(externals[cid], (fid,)))
    if not entries:
        return NoticeRound(incident_id, None, 0, len(told), deleted, None)
    for part_start in range(0, len(records), settings.notify_batch_size):
        results = ingest_batch(
            session, records[part_start : part_start + settings.notify_batch_size]
        )
        bad = [r for r in results if r.status == "error"]
        if bad:
            raise InvalidInput(f"could not record incident membership: {bad[0].detail}")
    send: Send = create_send(
        session, settings, ledger, template=template, entries=entries, actor=actor
    )
    ledger.append(
        session,
        [
            Event(
                "notice",
                actor,
                f"incident:{incident_id}",
                detail={
                    "incident": incident_id,
                    "send": send.id,
                    "customers": len(entries),
                    "already_told": len(told),
                    "template_version": template.version,
                },
            )
        ],
    )
    return NoticeRound(incident_id, send.id, len(entries), len(told), deleted, send.status)


__all__ = [
    "BUILT_IN",
    "FACT_KIND",
    "SERVICE",
    "TEMPLATE",
    "NoticeRound",
    "ensure_service",
    "ensure_template",
    "fact_id",
    "is_notice_send",
    "prepare_notices",
]
