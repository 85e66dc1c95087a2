"""Eligibility rules: which facts a recipient must have for a template to be sent to them.

A rule (JSON, stored with the template version)::

    {"require": [{"kind": "registry.gift_purchased", "as": "gift", "within_days": 7,
                  "where": [{"attr": "amount", "op": "gt", "value": 0}]}],
     "owns": [{"fact": "gift", "attr": "registry_id", "kind": "registry.created"}]}

``require``: every entry needs one fact of that kind for the recipient, inside the window
(days before the check) and meeting every condition; the template sees it as
``facts.<as>``. ``owns``: the attribute of a required fact must equal the same attribute of
one of the recipient's facts of ``kind`` (the registry the mail names is the recipient's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailveil.errors import InvalidInput
from mailveil.notify.facts import check_kind

OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "exists")
MAX_REQUIRE = 8


@dataclass(frozen=True)
class Condition:
    attr: str
    op: str
    value: Any

    def holds(self, attributes: Mapping[str, Any]) -> bool:
        if self.op == "exists":
            return (self.attr in attributes) == bool(self.value)
        if self.attr not in attributes:
            return False
        got = attributes[self.attr]
        try:
            if self.op == "eq":
                return bool(got == self.value)
            if self.op == "ne":
                return bool(got != self.value)
            if self.op == "in":
                return got in self.value
            if isinstance(got, bool) or not isinstance(got, int | float | str):
                return False
            if self.op == "gt":
                return bool(got > self.value)
            if self.op == "gte":
                return bool(got >= self.value)
            if self.op == "lt":
                return bool(got < self.value)
            return bool(got <= self.value)
        except TypeError:
            return False


@dataclass(frozen=True)
class Requirement:
    kind: str
    name: str
    within_days: float | None
    where: tuple[Condition, ...]

    def matches(
        self, kind: str, when: datetime, attributes: Mapping[str, Any], now: datetime
    ) -> bool:
        if kind != self.kind:
            return False
        if self.within_days is not None and when < now - timedelta(days=self.within_days):
            return False
        if when > now + timedelta(minutes=5):  # a fact from the future is not evidence
            return False
        return all(c.holds(attributes) for c in self.where)


@dataclass(frozen=True)
class Ownership:
    fact: str
    attr: str
    kind: str


@dataclass(frozen=True)
class Rule:
    require: tuple[Requirement, ...]
    owns: tuple[Ownership, ...]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(r.kind for r in self.require) | frozenset(o.kind for o in self.owns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.require)

    def to_json(self) -> dict[str, Any]:
        return {
            "require": [
                {
                    "kind": r.kind,
                    "as": r.name,
                    "within_days": r.within_days,
                    "where": [{"attr": c.attr, "op": c.op, "value": c.value} for c in r.where],
                }
                for r in self.require
            ],
            "owns": [{"fact": o.fact, "attr": o.attr, "kind": o.kind} for o in self.owns],
        }


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
        raise InvalidInput(f"{what} must be a name (letters, digits, '_')")
    return value


def parse_rule(raw: Any) -> Rule:
    """A Rule from its JSON, or InvalidInput naming what is wrong."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("rule must be an object with 'require' (and optionally 'owns')")
    unknown = set(raw) - {"require", "owns"}
    if unknown:
        raise InvalidInput(f"rule: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    items = raw.get("require")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_REQUIRE:
        raise InvalidInput(f"rule.require must list 1 to {MAX_REQUIRE} facts")
    require: list[Requirement] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"rule.require[{i}] must be an object")
        kind = check_kind(item.get("kind"))
        name = _name(item.get("as") or kind.rsplit(".", 1)[-1], f"rule.require[{i}].as")
        days = item.get("within_days")
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int | float) or days <= 0
        ):
            raise InvalidInput(f"rule.require[{i}].within_days must be a positive number")
        where: list[Condition] = []
        for j, cond in enumerate(item.get("where") or []):
            if not isinstance(cond, Mapping) or cond.get("op") not in OPS:
                raise InvalidInput(f"rule.require[{i}].where[{j}]: op must be one of {OPS}")
            if cond["op"] == "in" and not isinstance(cond.get("value"), list):
                raise InvalidInput(f"rule.require[{i}].where[{j}]: 'in' needs a list value")
            attr = _name(cond.get("attr"), f"rule.require[{i}].where[{j}].attr")
            where.append(Condition(attr, str(cond["op"]), cond.get("value", True)))
        require.append(Requirement(kind, name, days, tuple(where)))
    names = [r.name for r in require]
    if len(set(names)) != len(names):
        raise InvalidInput("rule.require: each fact needs its own 'as' name")
    owns: list[Ownership] = []
    for i, item in enumerate(raw.get("owns") or []):
        if not isinstance(item, Mapping) or item.get("fact") not in names:
            raise InvalidInput(f"rule.owns[{i}].fact must name a required fact ('as')")
        attr = _name(item.get("attr"), f"rule.owns[{i}].attr")
        owns.append(Ownership(str(item["fact"]), attr, check_kind(item.get("kind"))))
    return Rule(tuple(require), tuple(owns))


@dataclass(frozen=True)
class FactRow:
    fact_id: str
    kind: str
    customer_id: int
    occurred_at: datetime
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    eligible: bool
    reason: str
    evidence: tuple[FactRow, ...] = ()


def evaluate(
    rule: Rule,
    customer_id: int,
    facts: Sequence[FactRow],
    now: datetime,
    *,
    named: Sequence[str] | None = None,
) -> Verdict:
    """Decide one recipient from their facts. ``named``: the fact ids the caller gave as
    evidence; only those may satisfy ``require`` (``owns`` looks at all their facts)."""
    candidates = facts
    if named is not None:
        wanted = set(named)
        candidates = [f for f in facts if f.fact_id in wanted]
    chosen: list[FactRow] = []
    for req in rule.require:
        best: FactRow | None = None
        for f in candidates:
            if req.matches(f.kind, f.occurred_at, f.attributes, now) and (
                best is None or f.occurred_at > best.occurred_at
            ):
                best = f
        if best is None:
            return Verdict(False, f"no {req.kind} fact meets the rule")
        chosen.append(best)
    by_name = dict(zip(rule.names, chosen, strict=True))
    for own in rule.owns:
        value = by_name[own.fact].attributes.get(own.attr)
        if value is None:
            return Verdict(False, f"fact {own.fact} has no {own.attr}")
        if not any(f.kind == own.kind and f.attributes.get(own.attr) == value for f in facts):
            return Verdict(False, f"the {own.attr} is not the recipient's ({own.kind})")
    return Verdict(True, "", tuple(chosen))


__all__ = [
    "OPS",
    "Condition",
    "FactRow",
    "Ownership",
    "Requirement",
    "Rule",
    "Verdict",
    "evaluate",
    "parse_rule",
]
