"""Cedar policies: loading, validation, decisions with human reasons, memoisation, explain.

Where policies come from
    The shipped ``*.cedar`` files in ``mailveil/policy/policies/`` are loaded first. If the
    ``policy_dir`` setting names a folder, every ``*.cedar`` file in it is loaded too: a file
    with the same name as a shipped one *replaces* it (an empty file switches it off), any
    other name *adds* policies. The schema (``mailveil.cedarschema``) is always the shipped
    one: it describes the facts mailveil computes, which operators cannot add to.

What each policy must carry
    ``@id("...")`` (unique across all files; it is what the ledger records) and
    ``@reason("...")`` (the sentence shown when this policy decides). A permit policy may also
    carry ``@deny_reason("...")``: when nothing permits a request, the ``@deny_reason`` of the
    permit policies that apply to that kind of principal says why, with ``{name}``
    placeholders filled from the request context (``{window_days}``, ``{purpose}``,
    ``{template}``) and ``{kind}``. Every file is parsed and validated against the schema at
    load; a broken file raises PolicyError naming the file and Cedar's message.

What Cedar sees (and why decisions can be memoised)
    A request is a ``PolicyInput``: the principal's entity type and attributes, the customer's
    attributes and the context, as plain tuples. Entity ids given to Cedar are opaque labels
    of one evaluation ("p0", "c0"), not identities: policies decide on facts (status, order
    age, case assignment, owned templates), never on who someone is; to single out one
    principal, suspend it. Cedar is a pure function of its inputs, so ``PolicyEngine`` caches
    each decision under the ``PolicyInput`` itself -- exactly the inputs passed to Cedar,
    nothing more, nothing less -- and a hit returns what Cedar returned for the same input.
    The cache belongs to one loaded policy set (reloading builds a new engine) and is
    bounded (cleared when full).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, NamedTuple

import cedarpy

from mailveil.config.settings import Settings  # not the package, which imports config.checks
from mailveil.errors import MailveilError

NAMESPACE = "Mailveil"
ACTION_DISCLOSE = "disclose"
ACTION_LIST = "list"
ACTION_REQUEST_REVEAL = "request_reveal"
ACTION_MESSAGE = "message"  # the relay's messaging rules (messages.cedar)
SCHEMA_FILE = "mailveil.cedarschema"
PRINCIPAL_TYPES = {"seller": "Seller", "employee": "Employee", "service": "Service"}
DEFAULT_MEMO_SIZE = 262_144

Value = str | int | bool | tuple[str, ...]  # a tuple of strings is a Cedar Set
Attrs = tuple[tuple[str, Value], ...]  # sorted by name


class PolicyError(MailveilError):
    """A policy file does not parse, does not validate, or lacks its annotations."""

    code = "policy-error"
    status = 500
    title = "Policy configuration error"


class PolicyInput(NamedTuple):
    """Everything Cedar is given for one request; also the memo key."""

    principal_type: str  # "Seller" | "Employee" | "Service"
    principal: Attrs
    customer: Attrs
    context: Attrs
    action: str = ACTION_DISCLOSE


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    policy_ids: tuple[str, ...]  # @id of the policies that decided (none for default deny)
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyInfo:
    id: str
    effect: str  # "permit" | "forbid"
    reason: str
    deny_reason: str | None
    file: str
    principal_types: frozenset[str] | None  # None: applies to every principal type
    actions: frozenset[str] | None = None  # None: applies to every action


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    permitting: tuple[PolicyInfo, ...]  # permit policies whose conditions hold
    forbidding: tuple[PolicyInfo, ...]  # forbid policies whose conditions hold
    errors: tuple[str, ...]
    request: dict[str, Any] = field(default_factory=dict)  # the Cedar request, as sent

    def to_dict(self) -> dict[str, Any]:
        def info(p: PolicyInfo) -> dict[str, Any]:
            return {"id": p.id, "effect": p.effect, "reason": p.reason, "file": p.file}

        return {
            "allowed": self.decision.allowed,
            "reason": self.decision.reason,
            "decided_by": list(self.decision.policy_ids),
            "permitting": [info(p) for p in self.permitting],
            "forbidding": [info(p) for p in self.forbidding],
            "errors": list(self.errors),
            "request": self.request,
        }


@dataclass(frozen=True)
class PolicySource:
    name: str  # file name, e.g. "sellers.cedar"
    label: str  # where it came from, for messages
    text: str


def _shipped_dir() -> Traversable:
    return resources.files("mailveil.policy").joinpath("policies")


def shipped_schema() -> str:
    return _shipped_dir().joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def policy_sources(settings: Settings) -> list[PolicySource]:
    """Shipped files, with the operator's folder (``policy_dir``) replacing and adding."""
    sources: dict[str, PolicySource] = {}
    for entry in sorted(_shipped_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".cedar"):
            sources[entry.name] = PolicySource(
                entry.name, f"shipped policy {entry.name}", entry.read_text(encoding="utf-8")
            )
    if settings.policy_dir:
        folder = Path(settings.policy_dir)
        if not folder.is_dir():
            raise PolicyError(f"policy_dir {folder} is not a folder")
        for path in sorted(folder.glob("*.cedar")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise PolicyError(f"{path}: cannot be read: {exc}") from exc
            sources[path.name] = PolicySource(path.name, str(path), text)
    return [sources[name] for name in sorted(sources)]


def _scope_types(scope: dict[str, Any]) -> frozenset[str] | None:
    op = scope.get("op")
    if op == "is":
        return frozenset({scope["entity_type"]})
    if op in ("==", "in") and "entity" in scope:
        entity = scope["entity"]
        return frozenset({entity["type"]}) if isinstance(entity, dict) else None
    return None


def _scope_actions(scope: dict[str, Any]) -> frozenset[str] | None:
    op = scope.get("op")
    if op == "==" and isinstance(scope.get("entity"), dict):
        return frozenset({scope["entity"]["id"]})
    if op == "in" and isinstance(scope.get("entities"), list):
        return frozenset(e["id"] for e in scope["entities"] if isinstance(e, dict))
    return None


def _annotation(est: dict[str, Any], name: str) -> str | None:
    value = est.get("annotations", {}).get(name)
    return value if isinstance(value, str) else None


def _parse_source(
    source: PolicySource, schema: Any
) -> list[tuple[str, dict[str, Any], PolicyInfo]]:
    try:
        est = json.loads(cedarpy.policies_to_json_str(source.text))
    except ValueError as exc:
        raise PolicyError(f"{source.label}: Cedar cannot parse it: {exc}") from None
    if est.get("templates"):
        raise PolicyError(f"{source.label}: policy templates (?principal slots) are not supported")
    if est["staticPolicies"]:
        result = cedarpy.validate_policies(source.text, schema)
        if not result.validation_passed:
            names = result.id_annotations_by_policy_id
            problems = "; ".join(
                f"{names.get(e.policy_id, e.policy_id) or 'policy'}: {e.error}"
                for e in result.errors
            )
            raise PolicyError(f"{source.label}: does not match the mailveil schema: {problems}")
    out = []
    for position, (pid, policy) in enumerate(est["staticPolicies"].items(), start=1):
        ident = _annotation(policy, "id")
        reason = _annotation(policy, "reason")
        if not ident:
            raise PolicyError(f'{source.label}: policy {position} ({pid}) has no @id("...")')
        if not reason:
            raise PolicyError(f'{source.label}: policy {ident!r} has no @reason("...")')
        info = PolicyInfo(
            id=ident,
            effect=policy["effect"],
            reason=reason,
            deny_reason=_annotation(policy, "deny_reason"),
            file=source.name,
            principal_types=_scope_types(policy.get("principal", {})),
            actions=_scope_actions(policy.get("action", {})),
        )
        out.append((ident, policy, info))
    return out


def _fill(template: str, values: dict[str, Any]) -> str:
    # Plain {name} substitution; str.format would let a policy file reach into objects.
    return re.sub(r"\{([a-z_]+)\}", lambda m: str(values.get(m[1], m[0])), template)


def _cedar_value(value: Value) -> Any:
    return list(value) if isinstance(value, tuple) else value


class PolicyEngine:
    """A loaded, validated policy set. Build once (``PolicyEngine.load``) and pass it in."""

    def __init__(self, sources: Sequence[PolicySource], *, memo_size: int = DEFAULT_MEMO_SIZE):
        schema_text = shipped_schema()
        try:
            self._schema = cedarpy.Schema.from_str(schema_text)
        except ValueError as exc:  # a packaging error, not an operator one
            raise PolicyError(f"shipped schema {SCHEMA_FILE}: {exc}") from None
        static: dict[str, dict[str, Any]] = {}
        infos: dict[str, PolicyInfo] = {}
        for source in sources:
            for ident, est, info in _parse_source(source, self._schema):
                if ident in infos:
                    raise PolicyError(
                        f"{source.label}: @id {ident!r} is already used in {infos[ident].file}"
                    )
                static[ident] = est
                infos[ident] = info
        self.sources = list(sources)
        self.policies = infos
        self._static = static
        self._policy_set = self._build(static)
        self._explain_sets: tuple[Any, Any] | None = None
        self._memo: dict[PolicyInput, Decision] = {}
        self._memo_size = memo_size
        self.hits = 0
        self.misses = 0

    @classmethod
    def load(cls, settings: Settings, *, memo_size: int = DEFAULT_MEMO_SIZE) -> PolicyEngine:
        return cls(policy_sources(settings), memo_size=memo_size)

    @staticmethod
    def _build(static: dict[str, dict[str, Any]]) -> Any:
        doc = {"staticPolicies": static, "templates": {}, "templateLinks": []}
        return cedarpy.PolicySet.from_json_str(json.dumps(doc))

    # -- evaluation ---------------------------------------------------------------------

    @staticmethod
    def _cedar(inputs: Sequence[PolicyInput]) -> tuple[list[dict[str, Any]], list[Any]]:
        requests: list[dict[str, Any]] = []
        entities: list[Any] = []
        for i, inp in enumerate(inputs):
            principal = {"type": f"{NAMESPACE}::{inp.principal_type}", "id": f"p{i}"}
            resource = {"type": f"{NAMESPACE}::Customer", "id": f"c{i}"}
            entities.append(
                {
                    "uid": principal,
                    "parents": [],
                    "attrs": {k: _cedar_value(v) for k, v in inp.principal},
                }
            )
            entities.append(
                {
                    "uid": resource,
                    "parents": [],
                    "attrs": {k: _cedar_value(v) for k, v in inp.customer},
                }
            )
            requests.append(
                {
                    "principal": principal,
                    "action": {"type": f"{NAMESPACE}::Action", "id": inp.action},
                    "resource": resource,
                    "context": {k: _cedar_value(v) for k, v in inp.context},
                }
            )
        return requests, entities

    def _evaluate(self, inputs: Sequence[PolicyInput], policy_set: Any) -> list[Any]:
        requests, entities = self._cedar(inputs)
        handle = cedarpy.Entities.from_json_str(json.dumps(entities))
        return list(cedarpy.is_authorized_batch(requests, policy_set, handle, schema=self._schema))

    def _decision(self, inp: PolicyInput, result: Any) -> Decision:
        ids = tuple(sorted(result.diagnostics.reasons))
        errors = tuple(str(e) for e in result.diagnostics.errors)
        if result.allowed:
            reason = "; ".join(self.policies[i].reason for i in ids)
            return Decision(True, reason, ids, errors)
        if ids:  # forbidden
            reason = "; ".join(self.policies[i].reason for i in ids)
            return Decision(False, reason, ids, errors)
        return Decision(False, self._default_deny_reason(inp), (), errors)

    def _default_deny_reason(self, inp: PolicyInput) -> str:
        etype = f"{NAMESPACE}::{inp.principal_type}"
        values: dict[str, Any] = dict(inp.context)
        values["kind"] = inp.principal_type.lower()
        reasons = [
            _fill(p.deny_reason, values)
            for p in self.policies.values()
            if p.effect == "permit"
            and p.deny_reason
            and (p.principal_types is None or etype in p.principal_types)
            and (p.actions is None or inp.action in p.actions)
        ]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
        purpose = values.get("purpose", "")
        return f"no policy permits this {values['kind']} to reach this customer for {purpose!r}"

    def decide(self, inp: PolicyInput) -> Decision:
        return self.decide_many([inp])[0]

    def decide_uncached(self, inp: PolicyInput) -> Decision:
        """A decision that bypasses the memo: for inputs that never repeat (counters in the
        context), which would only crowd out the decisions worth keeping."""
        return self._decision(inp, self._evaluate([inp], self._policy_set)[0])

    def decide_many(self, inputs: Sequence[PolicyInput]) -> list[Decision]:
        """Decisions in order; only inputs not seen before reach Cedar, in one batch."""
        memo = self._memo
        out: list[Decision | None] = [memo.get(inp) for inp in inputs]
        missing = list(dict.fromkeys(inp for inp, d in zip(inputs, out, strict=True) if d is None))
        self.hits += len(inputs) - len(missing)
        if missing:
            self.misses += len(missing)
            if len(memo) + len(missing) > self._memo_size:
                memo.clear()  # crude but bounded; a full memo is rare and cheap to refill
            fresh = {
                inp: self._decision(inp, result)
                for inp, result in zip(
                    missing, self._evaluate(missing, self._policy_set), strict=True
                )
            }
            for inp in missing[: max(0, self._memo_size - len(memo))]:
                memo[inp] = fresh[inp]
            out = [d if d is not None else fresh[inp] for inp, d in zip(inputs, out, strict=True)]
        return [d for d in out if d is not None]

    def clear_memo(self) -> None:
        self._memo.clear()

    # -- explain ------------------------------------------------------------------------

    def _explanation_sets(self) -> tuple[Any, Any]:
        if self._explain_sets is None:
            permits = {k: v for k, v in self._static.items() if v["effect"] == "permit"}
            # Each forbid turned into a permit: Cedar then lists every forbid whose
            # conditions hold, not just the ones that decided.
            forbids = {
                k: {**v, "effect": "permit"}
                for k, v in self._static.items()
                if v["effect"] == "forbid"
            }
            self._explain_sets = (self._build(permits), self._build(forbids))
        return self._explain_sets

    def explain(self, inp: PolicyInput) -> Explanation:
        """Which policies permit and which forbid this request, and the decision (uncached)."""
        permits, forbids = self._explanation_sets()
        decided = self._evaluate([inp], self._policy_set)[0]
        by_permit = self._evaluate([inp], permits)[0]
        by_forbid = self._evaluate([inp], forbids)[0]
        errors = tuple(
            dict.fromkeys(
                str(e) for r in (decided, by_permit, by_forbid) for e in r.diagnostics.errors
            )
        )
        requests, entities = self._cedar([inp])
        return Explanation(
            decision=self._decision(inp, decided),
            permitting=tuple(self.policies[i] for i in sorted(by_permit.diagnostics.reasons)),
            forbidding=tuple(self.policies[i] for i in sorted(by_forbid.diagnostics.reasons)),
            errors=errors,
            request={"request": requests[0], "entities": entities},
        )


__all__ = [
    "ACTION_DISCLOSE",
    "ACTION_LIST",
    "ACTION_REQUEST_REVEAL",
    "PRINCIPAL_TYPES",
    "Attrs",
    "Decision",
    "Explanation",
    "PolicyEngine",
    "PolicyError",
    "PolicyInfo",
    "PolicyInput",
    "PolicySource",
    "Value",
    "policy_sources",
    "shipped_schema",
]
