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
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    DateTime,
    Text,
    cast,
    func,
    intersect,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.models import Customer
from mailveil.errors import InvalidInput
from mailveil.notify.eligibility import DELETED, ID, MISSING, Screener
from mailveil.notify.facts import check_kind, parse_time
from mailveil.notify.models import Fact, Template
from mailveil.notify.rules import Condition, FactRow, Rule, evaluate
from mailveil.policy.facts import chunks

MAX_NAMED_FACTS = 16
# Opt-outs a customer can record (contacts' opt_outs) that notifications honour: every
# notification but security and legal notices, or one category.
OPT_OUT_ALL = "notifications"
EXEMPT_CATEGORIES = ("security", "legal")


class Entry(NamedTuple):  # a tuple: an audience of millions is millions of these
    external_id: str
    fact_ids: tuple[str, ...] | None  # None: look the evidence up in the fact store
    language: str | None = None  # the translation to send them (None: the template's own)


@dataclass(frozen=True)
class FactQuery:
    kind: str
    since: datetime | None
    until: datetime | None
    where: tuple[Condition, ...]


class Assessment(NamedTuple):  # a tuple: millions are made per preview, cheaply
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
        # (Attributes only when there are conditions to test: each is a JSON document.)
        stmt = (
            select(
                Fact.id,
                Fact.fact_id,
                Customer.external_id,
                Fact.attributes if query.where else literal(None).label("attributes"),
            )
            .join(Customer, Customer.id == Fact.customer_id)
            .where(Fact.kind == query.kind, Fact.id > after)
            .order_by(Fact.id)
            .limit(batch)
        )
        if query.since is not None:
            stmt = stmt.where(Fact.occurred_at >= query.since)
        if query.until is not None:
            stmt = stmt.where(Fact.occurred_at < query.until)
        rows = session.connection().execute(stmt).all()
        if not rows:
            return
        for row in rows:
            if all(c.holds(row.attributes) for c in query.where):
                yield Entry(row.external_id, (row.fact_id,))
        after = rows[-1].id


def in_languages(entries: Iterable[Entry], template: Template) -> Iterator[Entry]:
    """The entries, refusing (InvalidInput) the first that names a language the template is
    not written in: sending it the template's own language instead would reach a customer in
    a language nobody chose for them. A segment (``query_entries``) names none: each of its
    recipients gets the template's own language."""
    offered = {template.language, *(template.translations or {})}
    for n, entry in enumerate(entries, start=1):
        if entry.language is not None and entry.language not in offered:
            raise InvalidInput(
                f"audience entry {n} (customer {v.shown(entry.external_id)}) asks for language "
                f"{v.shown(entry.language)}, but template {template.name} v{template.version} "
                f"is written in {', '.join(sorted(offered))}; name one of those, or no "
                f"language for {template.language}"
            )
        yield entry


def batched(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    it = iter(entries)
    while batch := list(islice(it, size)):
        yield batch


def suppression_scopes(template: Template) -> list[str]:
    scopes = ["global", f"category:{template.category}"]
    scopes += [f"tag:{t}" for t in template.sensitivity]
    if template.suppression_list:
        scopes.append(f"list:{template.suppression_list}")
    return scopes


def _listed(session: Session, column: Any, values: Sequence[Any], of: Any) -> Any:
    """``column IN values``; on PostgreSQL the values as one JSON array parameter (an IN list
    of thousands of parameters is rendered, and parsed by the driver, value by value)."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(values)
    listed = func.jsonb_array_elements_text(cast(literal(json.dumps(list(values)), Text), JSONB))
    return column.in_(select(cast(listed, of)).scalar_subquery())


def _fact_rows(session: Session, *where: Any) -> list[FactRow]:
    """Facts as rule rows, fetched at once (iterating a result fetches row by row); the time
    made UTC here as ``UTCDateTime`` would, without its per-row hook (which was a tenth of a
    large preview)."""
    at = type_coerce(Fact.occurred_at, DateTime(timezone=True))
    columns = (Fact.fact_id, Fact.kind, Fact.customer_id, at, Fact.attributes)
    rows = session.connection().execute(select(*columns).where(*where)).all()
    return [FactRow(f, k, c, _utc(t), a or {}) for f, k, c, t, a in rows]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def frequency_cap(
    settings: Settings, template: Template, now: datetime
) -> tuple[datetime, int] | None:
    """(since, deliveries) of the frequency cap for this template, or None (off, or exempt)."""
    if not settings.notify_frequency_cap or template.category in EXEMPT_CATEGORIES:
        return None
    since = now - timedelta(hours=settings.notify_frequency_window_hours)
    return since, settings.notify_frequency_cap


def screener_for(
    session: Session, settings: Settings, template: Template, rule: Rule | None, now: datetime
) -> Screener:
    """The set-based batch statement for this template and rule at ``now`` (build it once
    for a whole audience and pass it to ``assess``)."""
    dialect = session.get_bind().dialect.name
    return Screener(dialect, rule, suppression_scopes(template),
                    frequency_cap(settings, template, now), now)  # fmt: skip


def assess(
    session: Session,
    settings: Settings,
    template: Template,
    rule: Rule | None,
    entries: Sequence[Entry],
    now: datetime,
    *,
    screener: Screener | None = None,
    screened: dict[str, Any] | None = None,
) -> list[Assessment]:
    """One assessment per entry, in order. ``rule`` None: no evidence is needed (a
    correction, whose audience is the ledger's record of who got the original).

    Set-based (``eligibility.Screener``): one statement decides unknown, deleted and
    lacking a required fact; only customers who hold a fact of every required kind, or who
    named facts, have the rule evaluated in Python, and only the rule-eligible have their
    suppressions, cap, opt-outs and sensitive topics read (a second statement)."""
    if screener is None:
        screener = screener_for(session, settings, template, rule, now)
    if screened is None:  # (else the caller's rows of ``screener.run`` for these entries)
        screened = screener.run(session, sorted({e.external_id for e in entries}))
    reasons = screener.reasons
    facts: dict[int, list[FactRow]] = {}
    named: dict[str, FactRow] = {}
    if rule is not None:
        ids = sorted({
            sc[ID] for e in entries
            if (sc := screened.get(e.external_id)) is not None and not sc[DELETED]
            and (e.fact_ids is not None or sc[MISSING] < 0 or reasons[sc[MISSING]] is None)
        })  # fmt: skip
        kinds = sorted(rule.kinds)
        for part in chunks(ids):
            among = _listed(session, Fact.customer_id, part, BigInteger())
            for fact in _fact_rows(session, among, Fact.kind.in_(kinds)):
                facts.setdefault(fact.customer_id, []).append(fact)
        wanted = {f for e in entries if e.fact_ids for f in e.fact_ids}
        # A named fact of the rule's kinds, its customer's, was just read with their facts.
        for rows in facts.values():
            for fact in rows:
                if fact.fact_id in wanted:
                    named[fact.fact_id] = fact
        for part in chunks(sorted(wanted - named.keys())):
            for fact in _fact_rows(session, Fact.fact_id.in_(part)):
                named[fact.fact_id] = fact
    tags = set(template.sensitivity)
    exempt = template.category in EXEMPT_CATEGORIES
    out: list[Assessment] = []
    verdicts: dict[int, tuple[FactRow, ...] | str] = {}  # entry index: evidence or reason
    for i, entry in enumerate(entries):
        c = screened.get(entry.external_id)
        if c is None or c[DELETED] or rule is None:
            continue
        missing = c[MISSING]
        if missing >= 0 and entry.fact_ids is None and reasons[missing] is not None:
            continue
        verdicts[i] = _verdict(rule, c[ID], entry, facts.get(c[ID], []), named, now)
    details = screener.details(session, sorted({
        screened[entries[i].external_id][ID] for i, v in verdicts.items()
        if not isinstance(v, str)
    }))  # fmt: skip
    for i, entry in enumerate(entries):
        ext = entry.external_id
        c = screened.get(ext)
        if c is None:
            out.append(Assessment(ext, None, "ineligible", "unknown customer"))
            continue
        cid = c[ID]
        if c[DELETED]:
            out.append(Assessment(ext, cid, "ineligible", "customer deleted"))
            continue
        if rule is None:
            out.append(Assessment(ext, cid, "eligible", ""))
            continue
        verdict = verdicts.get(i)
        if verdict is None:
            out.append(Assessment(ext, cid, "ineligible", str(reasons[c[MISSING]])))
            continue
        if isinstance(verdict, str):
            out.append(Assessment(ext, cid, "ineligible", verdict))
            continue
        _id, scope, capped, opt_outs, topics = details[cid]
        why = f"suppressed ({scope})" if scope is not None else None
        if (
            why is None
            and not exempt
            and set(_json_list(opt_outs)) & {OPT_OUT_ALL, template.category}
        ):
            why = "customer opted out"
        if why is None and tags and tags & set(_json_list(topics)):
            why = "sensitive topic"
        ids_used = tuple(f.fact_id for f in verdict)
        if why is not None:
            out.append(Assessment(ext, cid, "suppressed", why, ids_used))
        elif capped:
            out.append(Assessment(ext, cid, "capped", "frequency cap", ids_used))
        else:
            out.append(Assessment(ext, cid, "eligible", "", ids_used, verdict))
    return out


def _json_list(text: str | None) -> list[str]:
    if not text or text == "[]":
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
    "frequency_cap",
    "parse_audience",
    "parse_entry",
    "parse_query",
    "query_entries",
    "rule_population",
    "screener_for",
    "suppression_scopes",
]
