"""Templates: versioned, linted at registration, rendered in a sandbox with StrictUndefined.

Registering a template gives its owner service the template's name in its ``templates``
attribute, which is what the shipped ``services.cedar`` policy checks before it discloses a
customer's alias to the service for purpose "notification".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.principals import get_principal_by_external_id, update_principal
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, InvalidInput, NotFound
from mailveil.notify import lint as lint_mod
from mailveil.notify.models import CATEGORIES, Send, Template
from mailveil.notify.rules import Rule, parse_rule
from mailveil.relay.policy import MessagingPolicy

# The X-Contact-Reason a category's mail gives the relay unless the template names one.
# Services share the employees' reasons at the relay (relay_employee_reasons) plus the
# critical ones; these are the shipped reasons that fit each category.
DEFAULT_REASONS = {  # contact reasons the relay's shipped settings accept from services
    "transactional": "notification",
    "marketing": "notification",
    "security": "security_notice",
    "legal": "legal",
}
FIELDS = {
    "name",
    "category",
    "subject",
    "body",
    "sensitivity",
    "rule",
    "owner",
    "reason",
    "expected_volume",
    "suppression_list",
    "reviewer",
    "words",
}
MAX_TEXT = 100_000


def _env() -> SandboxedEnvironment:
    return lint_mod.environment()


def relay_reasons(settings: Settings) -> frozenset[str]:
    """The contact reasons the relay's shipped rules accept from a service."""
    policy = MessagingPolicy.from_settings(settings)
    return frozenset(policy.allowed_reasons("service", None)) | policy.critical_reasons


def register_template(
    session: Session, settings: Settings, data: Mapping[str, Any], *, actor: str
) -> Template:
    """A new version of the named template (version 1 if new). Lint runs now; the findings are
    stored with the version. Flushes, does not commit."""
    if not isinstance(data, Mapping):
        raise InvalidInput("a template must be a JSON object")
    unknown = set(data) - FIELDS
    if unknown:
        raise InvalidInput(f"unknown template field(s): {', '.join(sorted(map(str, unknown)))}")
    name = v.slug(data.get("name"), "name")
    category = v.choice(data.get("category"), CATEGORIES, "category")
    subject = v.text(data.get("subject"), "subject", 998, allow_empty=False)
    if "\n" in subject or "\r" in subject:
        raise InvalidInput("subject must be one line")
    body = data.get("body")
    if not isinstance(body, str) or not body.strip() or len(body) > MAX_TEXT:
        raise InvalidInput(f"body must be text of 1 to {MAX_TEXT} characters")
    sensitivity = v.slug_list(data.get("sensitivity"), "sensitivity")
    rule = parse_rule(data.get("rule"))
    owner_ext = v.external_id(data.get("owner"), "owner")
    owner = get_principal_by_external_id(session, "service", owner_ext)
    reason = data.get("reason") or DEFAULT_REASONS[category]
    reason = v.slug(reason, "reason").replace("-", "_")
    volume = data.get("expected_volume")
    if volume is not None and (
        isinstance(volume, bool) or not isinstance(volume, int) or volume < 0
    ):
        raise InvalidInput("expected_volume must be a whole number >= 0")
    suppression = data.get("suppression_list")
    suppression = None if suppression in (None, "") else v.slug(suppression, "suppression_list")
    reviewer = v.text(data.get("reviewer"), "reviewer", 200) or None
    words = v.slug_list(data.get("words"), "words") if data.get("words") else []
    findings = [
        f.to_dict()
        for f in lint_mod.lint(
            subject=subject,
            body=body,
            category=category,
            sensitivity=sensitivity,
            fact_names=rule.names,
            suppression_list=suppression,
            reviewer=reviewer,
            words=words,
            words_file=settings.notify_words_file,
        )
    ]
    if reason not in relay_reasons(settings):
        findings.append(
            lint_mod.Finding(
                "error",
                "relay-reason",
                f"the relay refuses contact reason {reason!r} from services (allowed: "
                f"{', '.join(sorted(relay_reasons(settings)))})",
            ).to_dict()
        )
    latest = session.scalar(select(func.max(Template.version)).where(Template.name == name))
    if latest is not None:
        previous = get_template(session, name, latest)
        if previous.owner_id != owner.id:
            raise Conflict(f"template {name!r} belongs to another service")
    row = Template(
        name=name,
        version=(latest or 0) + 1,
        category=category,
        subject=subject,
        body=body,
        sensitivity=sensitivity,
        rule=rule.to_json(),
        owner_id=owner.id,
        reason=reason,
        declared_volume=volume,
        suppression_list=suppression,
        reviewer=reviewer,
        words=words,
        findings=findings,
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(row)
    owned = list((owner.attributes or {}).get("templates") or [])
    if name not in owned:
        update_principal(session, owner.id, attributes={"templates": [*owned, name]})
    session.flush()
    return row


def get_template(session: Session, name: str, version: int | None = None) -> Template:
    stmt = select(Template).where(Template.name == name)
    stmt = stmt.where(Template.version == version) if version else stmt
    row = session.scalar(stmt.order_by(Template.version.desc()).limit(1))
    if row is None:
        shown = f"{v.shown(name)} version {version}" if version else v.shown(name)
        raise NotFound(f"no template {shown}")
    return row


def list_templates(session: Session) -> list[Template]:
    """The latest version of every template."""
    latest = (
        select(Template.name, func.max(Template.version).label("version"))
        .group_by(Template.name)
        .subquery()
    )
    stmt = (
        select(Template)
        .join(latest, (latest.c.name == Template.name) & (latest.c.version == Template.version))
        .order_by(Template.name)
    )
    return list(session.scalars(stmt))


def acknowledge(session: Session, name: str, version: int, *, person: str) -> Template:
    """A named person accepts the version's warnings (errors cannot be acknowledged)."""
    row = get_template(session, name, version)
    person = v.text(person, "person", 200, allow_empty=False)
    if lint_mod.blocking(row.findings):
        raise Conflict("a template with lint errors cannot be acknowledged: fix it")
    row.acknowledged_by = person
    row.acknowledged_at = utcnow()
    session.flush()
    return row


def sendable(row: Template) -> None:
    """Raise Conflict unless the version may be sent (no errors, warnings acknowledged)."""
    errors = lint_mod.blocking(row.findings)
    if errors:
        codes = ", ".join(sorted({e["code"] for e in errors}))
        raise Conflict(f"template {row.name} v{row.version} has lint errors: {codes}")
    if lint_mod.warnings(row.findings) and not row.acknowledged_by:
        raise Conflict(f"template {row.name} v{row.version} has warnings no one has acknowledged")


def rule_of(row: Template) -> Rule:
    return parse_rule(row.rule)


def expected_volume(session: Session, row: Template) -> int | None:
    """Learned from history: the largest eligible audience of the template's last ten
    completed sends (any version); before any history, the declared volume."""
    history = select(Send.eligible).join(Template, Template.id == Send.template_id)
    history = history.where(
        Template.name == row.name, Send.status == "completed", Send.corrects_id.is_(None)
    )
    sizes = list(session.scalars(history.order_by(Send.id.desc()).limit(10)))
    if sizes:
        return max(sizes)
    return row.declared_volume


def render(row: Template, context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) for one recipient; InvalidInput when a value is missing or the
    template reaches outside the sandbox."""
    env = _env()
    try:
        subject = env.from_string(row.subject).render(context)
        body = env.from_string(row.body).render(context)
    except TemplateError as exc:
        raise InvalidInput(f"render failed: {type(exc).__name__}: {exc}") from exc
    subject = " ".join(subject.split())
    return subject, body


def template_view(row: Template, owner_external_id: str | None = None) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version,
        "category": row.category,
        "subject": row.subject,
        "body": row.body,
        "sensitivity": row.sensitivity,
        "rule": row.rule,
        "owner": owner_external_id,
        "reason": row.reason,
        "expected_volume": row.declared_volume,
        "suppression_list": row.suppression_list,
        "reviewer": row.reviewer,
        "words": row.words,
        "lint": row.findings,
        "sendable": not lint_mod.blocking(row.findings)
        and (not lint_mod.warnings(row.findings) or bool(row.acknowledged_by)),
        "acknowledged_by": row.acknowledged_by,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


__all__ = [
    "DEFAULT_REASONS",
    "acknowledge",
    "expected_volume",
    "get_template",
    "list_templates",
    "register_template",
    "relay_reasons",
    "render",
    "rule_of",
    "sendable",
    "template_view",
]
