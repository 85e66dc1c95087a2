"""Templates: versioned, linted at registration, rendered in a sandbox with StrictUndefined.

Registering a template gives its owner service the template's name in its ``templates``
attribute, which is what the shipped ``services.cedar`` policy checks before it discloses a
customer's alias to the service for purpose "notification".
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.models import Principal
from mailveil.contacts.principals import get_principal_by_external_id, update_principal
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, InvalidInput, NotFound
from mailveil.notify import lint as lint_mod
from mailveil.notify.models import CATEGORIES, Send, Template
from mailveil.notify.rules import Rule, parse_rule
from mailveil.relay.content_rules import MessagingPolicy

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
    "language",
    "translations",
}
MAX_TEXT = 100_000
MAX_TRANSLATIONS = 20
# Checks of the text itself, repeated for each translation (the others concern the template
# as a whole and are reported once).
TEXT_CODES = frozenset({
    "template-syntax", "sandbox-escape", "unresolved-placeholder", "unbound-fact", "test-marker",
    "spelling", "link-in-notice", "missing-unsubscribe", "shouting", "long-subject",
})  # fmt: skip


def _env() -> SandboxedEnvironment:
    return lint_mod.environment()


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> JinjaTemplate:
    """A subject or body compiled once per process: compiling it for every recipient (a new
    sandbox and a Python compile twice a message) was a third of a worker's time per
    recipient. Keyed by the text itself, so a new template version is a new entry; bounded.
    (A rendered template is safe to share between threads.)"""
    return _env().from_string(source)


def relay_reasons(settings: Settings) -> frozenset[str]:
    """The contact reasons the relay's shipped rules accept from a service."""
    policy = MessagingPolicy.from_settings(settings)
    return frozenset(policy.allowed_reasons("service", None)) | policy.critical_reasons


def text_pair(data: Mapping[str, Any], where: str) -> tuple[str, str]:
    """(subject, body), checked: a one-line subject, a body of bounded size."""
    subject = v.text(data.get("subject"), f"{where}subject", 998, allow_empty=False)
    if "\n" in subject or "\r" in subject:
        raise InvalidInput(f"{where}subject must be one line")
    body = data.get("body")
    if not isinstance(body, str) or not body.strip() or len(body) > MAX_TEXT:
        raise InvalidInput(f"{where}body must be text of 1 to {MAX_TEXT} characters")
    return subject, body


def language_of(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or raw not in lint_mod.LANGUAGES:
        raise InvalidInput(f"{where} must be one of {', '.join(lint_mod.LANGUAGES)}")
    return raw


def parse_translations(raw: Any, language: str) -> dict[str, dict[str, str]]:
    """``{"de": {"subject", "body"}, ...}``: the same template in other languages (a
    recipient gets the one their audience entry names, else the template's own)."""
    if raw in (None, {}):
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_TRANSLATIONS:
        raise InvalidInput(f"translations must map up to {MAX_TRANSLATIONS} languages to "
                           "{'subject', 'body'}")  # fmt: skip
    out: dict[str, dict[str, str]] = {}
    for lang, item in raw.items():
        lang = language_of(lang, "a translations key")
        if lang == language:
            raise InvalidInput(f"translations.{lang}: that is the template's own language")
        if not isinstance(item, Mapping) or set(item) - {"subject", "body"}:
            raise InvalidInput(f"translations.{lang} must be {{'subject', 'body'}}")
        subject, body = text_pair(item, f"translations.{lang}.")
        out[lang] = {"subject": subject, "body": body}
    return out


def lint_template(
    settings: Settings, *, subject: str, body: str, category: str, sensitivity: list[str],
    rule: Rule | None, suppression: str | None, reviewer: str | None, words: list[str],
    reason: str, language: str = "en", translations: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every finding of a template: its text in its own language, each translation's text
    in that translation's language (messages start with ``[lang]``), the relay's reasons."""

    def run(subj: str, text: str, lang: str) -> list[lint_mod.Finding]:
        return lint_mod.lint(
            subject=subj, body=text, category=category, sensitivity=sensitivity,
            fact_names=rule.names if rule is not None else (), suppression_list=suppression,
            reviewer=reviewer, words=words, words_file=settings.notify_words_file,
            needs_evidence=rule is not None, language=lang,
        )  # fmt: skip

    findings = [f.to_dict() for f in run(subject, body, language)]
    for lang, item in sorted((translations or {}).items()):
        for f in run(item["subject"], item["body"], lang):
            if f.code in TEXT_CODES:
                findings.append({**f.to_dict(), "message": f"[{lang}] {f.message}"})
    if reason not in relay_reasons(settings):
        findings.append(
            lint_mod.Finding(
                "error",
                "relay-reason",
                f"the relay refuses contact reason {reason!r} from services (allowed: "
                f"{', '.join(sorted(relay_reasons(settings)))})",
            ).to_dict()
        )
    return findings


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
    subject, body = text_pair(data, "")
    language = language_of(data.get("language") or "en", "language")
    translations = parse_translations(data.get("translations"), language)
    sensitivity = v.slug_list(data.get("sensitivity"), "sensitivity")
    # A template without a rule can only correct a send (its audience is the ledger's
    # record of who got the original): no evidence to require, nothing to warn about.
    rule = parse_rule(data["rule"]) if data.get("rule") not in (None, {}) else None
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
    findings = lint_template(
        settings, subject=subject, body=body, category=category, sensitivity=sensitivity,
        rule=rule, suppression=suppression, reviewer=reviewer, words=words, reason=reason,
        language=language, translations=translations,
    )  # fmt: skip
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
        rule=rule.to_json() if rule is not None else {},
        owner_id=owner.id,
        reason=reason,
        declared_volume=volume,
        suppression_list=suppression,
        reviewer=reviewer,
        words=words,
        language=language,
        translations=translations or None,
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


def rule_of(row: Template) -> Rule | None:
    """The version's eligibility rule; None for a correction-only template."""
    return parse_rule(row.rule) if row.rule else None


def required_rule(row: Template) -> Rule:
    """The rule a send needs; Conflict for a correction-only template."""
    rule = rule_of(row)
    if rule is None:
        raise Conflict(
            f"template {row.name} v{row.version} has no eligibility rule: it can only be "
            "used to correct a send (sends correct / POST /v1/sends/{id}/correction)"
        )
    return rule


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


def languages_of(row: Template) -> list[str]:
    return [row.language, *sorted(row.translations or {})]


def render(
    row: Template, context: Mapping[str, Any], language: str | None = None
) -> tuple[str, str]:
    """(subject, body) for one recipient in ``language`` (None: the template's own);
    InvalidInput when the template has no such translation (never another language
    instead), a value is missing or the template reaches outside the sandbox."""
    if language is None or language == row.language:
        variant = {"subject": row.subject, "body": row.body}
    else:
        found = (row.translations or {}).get(language)
        if found is None:
            raise InvalidInput(f"template {row.name} v{row.version} has no translation "
                               f"{v.shown(language)}")  # fmt: skip
        variant = found
    try:
        subject = _compiled(variant["subject"]).render(context)
        body = _compiled(variant["body"]).render(context)
    except TemplateError as exc:
        raise InvalidInput(f"render failed: {type(exc).__name__}: {exc}") from exc
    subject = " ".join(subject.split())
    return subject, body


def owner_of(session: Session, row: Template) -> Principal:
    owner = session.get(Principal, row.owner_id)
    if owner is None:
        raise NotFound("the template's owner service no longer exists")
    return owner


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
        "language": row.language,
        "translations": row.translations or {},
        "findings": row.findings,
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
    "languages_of",
    "lint_template",
    "list_templates",
    "owner_of",
    "register_template",
    "relay_reasons",
    "render",
    "required_rule",
    "rule_of",
    "sendable",
    "template_view",
]
