"""Audiences: who a send is for, and, recipient by recipient, whether they may get it.

An audience is an explicit list (``{"customers": [{"customer": ext, "facts": [ids]}]}``, or
NDJSON lines of the same objects) or a fact query (``{"query": {"kind": ..., "since": ...,
"until": ..., "where": [...]}}``: every customer with such a fact, that fact as evidence).
Everything is streamed in batches: memory is bounded by the batch, not the audience.

``assess`` decides a batch in a fixed number of queries: customers, their facts of the
rule's kinds, the facts the caller named, suppressions and recent deliveries.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, func, intersect, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.models import Customer
from mailveil.errors import InvalidInput
from mailveil.notify.facts import check_kind, parse_time
from mailveil.notify.models import Fact, Recipient, Suppression, Template
from mailveil.notify.rules import Condition, FactRow, Rule, evaluate
from mailveil.policy.facts import chunks

MAX_NAMED_FACTS = 16
# Opt-outs a customer can record (contacts' opt_outs) that notifications honour: every
# notification but security and legal notices, or one category.
OPT_OUT_ALL = "notifications"
EXEMPT_CATEGORIES = ("security", "legal")


@dataclass(frozen=True)
class Entry:
    external_id: str
    fact_ids: tuple[str, ...] | None  # None: look the evidence up in the fact store
    language: str | None = None  # the translation to send them (None: the template's own)


@dataclass(frozen=True)
class FactQuery:
    kind: str
    since: datetime | None
    until: datetime | None
    where: tuple[Condition, ...]


@dataclass(frozen=True)
class Assessment:
    external_id: str
    customer_id: int | None
    state: str  # eligible | ineligible | suppressed | capped
    reason: str
    fact_ids: tuple[str, ...] = ()
    evidence: tuple[FactRow, ...] = ()


def parse_entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}: an audience entry must be an object")
    unknown = set(raw) - {"customer", "facts", "language"}
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    ext = v.external_id(raw.get("customer"), f"{where}: customer")
    language = raw.get("language")
    if language is not None and (not isinstance(language, str) or not language.isalpha()
                                 or len(language) > 8):  # fmt: skip
        raise InvalidInput(f"{where}: language must be a language code such as 'de'")
    facts = raw.get("facts")
    if facts is None:
        return Entry(ext, None, language)
    if not isinstance(facts, list) or not 1 <= len(facts) <= MAX_NAMED_FACTS:
        raise InvalidInput(f"{where}: facts must list 1 to {MAX_NAMED_FACTS} fact ids")
    return Entry(ext, tuple(v.external_id(f, f"{where}: fact id") for f in facts), language)


def parse_query(raw: Any) -> FactQuery:
    if not isinstance(raw, Mapping):
        raise InvalidInput("audience.query must be an object")
    unknown = set(raw) - {"kind", "since", "until", "where"}
    if unknown:
        raise InvalidInput(f"audience.query: unknown field(s) {', '.join(sorted(unknown))}")
    from mailveil.notify.rules import parse_rule

    # The conditions share the rule's syntax (and its checks).
    probe = parse_rule({"require": [{"kind": raw.get("kind"), "where": raw.get("where") or []}]})
    since = parse_time(raw["since"], "since") if raw.get("since") else None
    until = parse_time(raw["until"], "until") if raw.get("until") else None
    return FactQuery(check_kind(raw.get("kind")), since, until, probe.require[0].where)


def parse_audience(raw: Any) -> list[Entry] | FactQuery:
    """An audience given as JSON (a list of entries is held: the JSON body is bounded)."""
    if not isinstance(raw, Mapping) or len(raw) != 1 or not set(raw) & {"customers", "query"}:
        raise InvalidInput("audience must be {'customers': [...]} or {'query': {...}}")
    if "query" in raw:
        return parse_query(raw["query"])
    items = raw["customers"]
    if not isinstance(items, list) or not items:
        raise InvalidInput("audience.customers must be a non-empty list")
    return [parse_entry(item, f"audience.customers[{i}]") for i, item in enumerate(items)]


def query_entries(session: Session, query: FactQuery, batch: int) -> Iterator[Entry]:
    """The customers a fact query names, each with the fact as evidence (keyset-paged)."""
    after = 0
    while True:
        stmt = (
            select(Fact.id, Fact.fact_id, Customer.external_id, Fact.attributes)
            .join(Customer, Customer.id == Fact.customer_id)
            .where(Fact.kind == query.kind, Fact.id > after)
            .order_by(Fact.id)
            .limit(batch)
        )
        if query.since is not None:
            stmt = stmt.where(Fact.occurred_at >= query.since)
        if query.until is not None:
            stmt = stmt.where(Fact.occurred_at < query.until)
        rows = session.execute(stmt).all()
        if not rows:
            return
        for row in rows:
            if all(c.holds(row.attributes) for c in query.where):
                yield Entry(row.external_id, (row.fact_id,))
        after = rows[-1].id


def batched(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    batch: list[Entry] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def suppression_scopes(template: Template) -> list[str]:
    scopes = ["global", f"category:{template.category}"]
    scopes += [f"tag:{t}" for t in template.sensitivity]
    if template.suppression_list:
        scopes.append(f"list:{template.suppression_list}")
    return scopes


def _fact_row(row: Any) -> FactRow:
    return FactRow(row.fact_id, row.kind, row.customer_id, row.occurred_at, row.attributes or {})


def assess(
    session: Session,
    settings: Settings,
    template: Template,
    rule: Rule | None,
    entries: Sequence[Entry],
    now: datetime,
) -> list[Assessment]:
    """One assessment per entry, in order. ``rule`` None: no evidence is needed (a
    correction, whose audience is the ledger's record of who got the original)."""
    exts = sorted({e.external_id for e in entries})
    customers: dict[str, Any] = {}
    for part in chunks(exts):
        for row in session.execute(
            select(
                Customer.id,
                Customer.external_id,
                # As text, decoded only for the eligible few: decoding every recipient's
                # JSON was a third of a preview's time (most audiences are mostly ineligible).
                cast(Customer.opt_outs, Text).label("opt_outs"),
                cast(Customer.sensitive_topics, Text).label("sensitive_topics"),
                Customer.deleted_at,
            ).where(Customer.external_id.in_(part))
        ):
            customers[row.external_id] = row
    ids = sorted(c.id for c in customers.values())
    facts: dict[int, list[FactRow]] = {}
    named: dict[str, FactRow] = {}
    if rule is not None:
        kinds = sorted(rule.kinds)
        for part in chunks(ids):
            for row in session.execute(
                select(
                    Fact.fact_id, Fact.kind, Fact.customer_id, Fact.occurred_at, Fact.attributes
                ).where(Fact.customer_id.in_(part), Fact.kind.in_(kinds))
            ):
                facts.setdefault(row.customer_id, []).append(_fact_row(row))
        wanted = sorted({f for e in entries if e.fact_ids for f in e.fact_ids})
        for part in chunks(wanted):
            for row in session.execute(
                select(
                    Fact.fact_id, Fact.kind, Fact.customer_id, Fact.occurred_at, Fact.attributes
                ).where(Fact.fact_id.in_(part))
            ):
                named[row.fact_id] = _fact_row(row)
    suppressed: dict[int, str] = {}
    scopes = suppression_scopes(template)
    capped: set[int] = set()
    if rule is not None:
        for part in chunks(ids):
            for cid, scope in session.execute(
                select(Suppression.customer_id, Suppression.scope).where(
                    Suppression.customer_id.in_(part), Suppression.scope.in_(scopes)
                )
            ):
                suppressed.setdefault(cid, f"suppressed ({scope})")
        if settings.notify_frequency_cap and template.category not in EXEMPT_CATEGORIES:
            since = now - timedelta(hours=settings.notify_frequency_window_hours)
            for part in chunks(ids):
                for cid, count in session.execute(
                    select(Recipient.customer_id, func.count())
                    .where(
                        Recipient.customer_id.in_(part),
                        Recipient.state == "delivered",
                        Recipient.delivered_at >= since,
                    )
                    .group_by(Recipient.customer_id)
                ):
                    if count >= settings.notify_frequency_cap:
                        capped.add(cid)
    tags = set(template.sensitivity)
    out: list[Assessment] = []
    for entry in entries:
        c = customers.get(entry.external_id)
        if c is None:
            out.append(Assessment(entry.external_id, None, "ineligible", "unknown customer"))
            continue
        if c.deleted_at is not None:
            out.append(Assessment(entry.external_id, c.id, "ineligible", "customer deleted"))
            continue
        if rule is not None:
            verdict = _verdict(rule, c.id, entry, facts.get(c.id, []), named, now)
            if isinstance(verdict, str):
                out.append(Assessment(entry.external_id, c.id, "ineligible", verdict))
                continue
            evidence = verdict
            opt_outs = set(_json_list(c.opt_outs))
            exempt = template.category in EXEMPT_CATEGORIES
            why = suppressed.get(c.id)
            if why is None and not exempt and opt_outs & {OPT_OUT_ALL, template.category}:
                why = "customer opted out"
            if why is None and tags and tags & set(_json_list(c.sensitive_topics)):
                why = "sensitive topic"
            ids_used = tuple(f.fact_id for f in evidence)
            if why is not None:
                out.append(Assessment(entry.external_id, c.id, "suppressed", why, ids_used))
            elif c.id in capped:
                out.append(Assessment(entry.external_id, c.id, "capped", "frequency cap", ids_used))
            else:
                out.append(Assessment(entry.external_id, c.id, "eligible", "", ids_used, evidence))
            continue
        out.append(Assessment(entry.external_id, c.id, "eligible", ""))
    return out


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    value = json.loads(text)
    return [str(v) for v in value] if isinstance(value, list) else []


def _verdict(
    rule: Rule,
    customer_id: int,
    entry: Entry,
    facts: list[FactRow],
    named: dict[str, FactRow],
    now: datetime,
) -> tuple[FactRow, ...] | str:
    if entry.fact_ids is not None:
        for fid in entry.fact_ids:
            found = named.get(fid)
            if found is None:
                return "unknown fact"
            if found.customer_id != customer_id:
                return "fact belongs to another customer"
    verdict = evaluate(rule, customer_id, facts, now, named=entry.fact_ids)
    return verdict.evidence if verdict.eligible else verdict.reason


def rule_population(session: Session, rule: Rule, now: datetime) -> int:
    """How many customers hold, for every fact the rule requires, one of its kind inside
    its window: the population the rule can make eligible (attribute conditions and
    ``owns`` not applied: an upper bound, one indexed query)."""
    parts = []
    for req in rule.require:
        q = select(Fact.customer_id).where(Fact.kind == req.kind)
        if req.within_days is not None:
            q = q.where(Fact.occurred_at >= now - timedelta(days=req.within_days))
        parts.append(q)
    held = parts[0] if len(parts) == 1 else intersect(*parts)
    return int(session.scalar(select(func.count(func.distinct(held.subquery().c[0])))) or 0)


def evidence_context(rule: Rule, evidence: Sequence[FactRow], external_id: str) -> dict[str, Any]:
    """The template's view of one recipient: their external id and the bound facts."""
    bound: dict[str, Any] = {}
    for req, fact in zip(rule.require, evidence, strict=False):
        bound[req.name] = {**fact.attributes, "id": fact.fact_id, "time": fact.occurred_at}
    return {"customer": {"id": external_id}, "facts": bound}


__all__ = [
    "EXEMPT_CATEGORIES",
    "OPT_OUT_ALL",
    "Assessment",
    "Entry",
    "FactQuery",
    "assess",
    "batched",
    "evidence_context",
    "parse_audience",
    "parse_entry",
    "parse_query",
    "query_entries",
    "rule_population",
    "suppression_scopes",
]
