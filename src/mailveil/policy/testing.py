"""Operator policy test cases: load ``*.toml`` case files, run them against a policy set.

A case file holds ``[[case]]`` tables (see docs/policies.md for the format). Each case names
the facts of one request -- the principal, the customer, the context -- and the decision
it expects. The principal and customer facts go through the same builders
(``facts.principal_entity`` / ``facts.customer_attrs``, then ``facts.cedar_input``) and the
same checks as stored principals and customers, so a case sees exactly what production
would give Cedar. The
context is given explicitly, as typed values; Cedar checks it against the schema, and its
complaints fail the case with Cedar's own message.

A file that cannot be read or parsed, or that has a malformed case, is reported with its
line number (for a malformed case, the line of its ``[[case]]`` header) and none of its
cases run; the other files still do.

``mailveil policy test`` is the shell over this module; nothing here prints.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.models import PRINCIPAL_STATUSES
from mailveil.contacts.principals import validate_attributes
from mailveil.errors import InvalidInput
from mailveil.policy.engine import (
    ACTION_DISCLOSE,
    PRINCIPAL_TYPES,
    Attrs,
    Explanation,
    PolicyEngine,
    PolicyInput,
    Value,
)
from mailveil.policy.facts import PrincipalEntity, cedar_input, customer_attrs, principal_entity

CASE_KEYS = (
    "name",
    "action",
    "principal",
    "customer",
    "context",
    "expect",
    "expect_policies",
    "expect_reason",
)
PRINCIPAL_KEYS = ("kind", "status", "attributes")
CUSTOMER_KEYS = ("country", "opt_outs", "sensitive_topics", "deleted")
DEFAULT_COUNTRY = "DE"
EXPECTATIONS = ("allow", "deny")
CEDAR_LONG = (-(2**63), 2**63 - 1)

# A "[[case]]" header line (TOML allows blanks inside the brackets and a quoted key).
_CASE_HEADER = re.compile(r"""^[ \t]*\[\[[ \t]*(?:case|"case"|'case')[ \t]*\]\]""")
_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


class CaseError(ValueError):
    """One thing wrong with one case; the loader adds the file and line."""


@dataclass(frozen=True)
class FileProblem:
    """Why a case file (or one of its cases) cannot be run."""

    file: Path
    line: int  # 1-based
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.line}:{self.column}" if self.column else f"{self.line}"
        return f"{self.file}:{where}: {self.message}"


@dataclass(frozen=True)
class PolicyCase:
    """One case, checked and turned into exactly what Cedar will be given."""

    file: Path
    line: int  # of its [[case]] header
    name: str
    input: PolicyInput
    expect_allowed: bool
    expect_policies: tuple[str, ...] | None = None  # sorted; None: not checked
    expect_reason: str | None = None

    @property
    def expected(self) -> str:
        return "allow" if self.expect_allowed else "deny"


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    explanation: Explanation
    problems: tuple[str, ...]  # empty when the case passed

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def got(self) -> str:
        return "allow" if self.explanation.decision.allowed else "deny"

    @property
    def verdict(self) -> str:
        """ "pass", "fail" (a different decision) or "error" (Cedar could not evaluate it)."""
        if self.explanation.errors:
            return "error"
        return "pass" if self.passed else "fail"

    @property
    def decided_by(self) -> tuple[str, ...]:
        return self.explanation.decision.policy_ids


@dataclass(frozen=True)
class SuiteReport:
    files: tuple[Path, ...]
    results: tuple[CaseResult, ...]
    problems: tuple[FileProblem, ...]  # invalid files, in file order
    policy_ids: tuple[str, ...]  # every policy in the set, sorted

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def invalid_files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(p.file for p in self.problems))

    @property
    def undecided_policies(self) -> tuple[str, ...]:
        """Policies that decided no case: the set's rules the cases do not exercise."""
        used = {pid for r in self.results for pid in r.decided_by}
        return tuple(pid for pid in self.policy_ids if pid not in used)


# -- loading ----------------------------------------------------------------------------


def find_case_files(directory: Path) -> list[Path]:
    """Every ``*.toml`` directly in ``directory``, by name. InvalidInput if not a folder."""
    if not directory.is_dir():
        raise InvalidInput(f"{directory} is not a folder")
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def _toml_problem(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> FileProblem:
    message = str(exc)
    where = _TOML_WHERE.search(message)
    if where:
        line, column = int(where[1]), int(where[2])
        message = message[: where.start()]
    else:
        line, column = max(1, text.count("\n") + (not text.endswith("\n"))), 0
        at_end = _TOML_AT_END.search(message)
        if at_end:
            message = message[: at_end.start()] + " (at the end of the file)"
    return FileProblem(path, line, f"TOML syntax error: {message}", column or None)


def _header_lines(text: str, count: int) -> list[int]:
    """The line of each ``[[case]]`` header, in order; empty when they cannot be matched up
    (e.g. cases written as an inline array)."""
    lines = text.splitlines()
    found = [i for i, line in enumerate(lines) if _CASE_HEADER.match(line)]
    if len(found) != count:
        # Some candidates sit inside a multi-line string: a real header is one whose
        # preceding text is whole TOML on its own.
        def top_level(i: int) -> bool:
            try:
                tomllib.loads("\n".join(lines[:i]))
            except tomllib.TOMLDecodeError:
                return False
            return True

        found = [i for i in found if top_level(i)]
    return [i + 1 for i in found] if len(found) == count else []


def _key_line(text: str, key: str) -> int:
    """Best effort: the first line that assigns or opens ``key`` at the start of a line."""
    pattern = re.compile(rf"""^[ \t]*(?:\[+[ \t]*)?(?:{re.escape(key)}|"{re.escape(key)}")\b""")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 1


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def _table(value: Any, what: str, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CaseError(f"{what} must be a table, not {_type_name(value)}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise CaseError(f"{what}: unknown key {unknown[0]!r} (allowed: {', '.join(keys)})")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CaseError(f"{what} must be a string, not {_type_name(value)}")
    return value


def _one_of(value: Any, options: Iterable[str], what: str) -> str:
    allowed = ", ".join(f'"{o}"' for o in options)
    if not isinstance(value, str):
        raise CaseError(f"{what} must be a string ({allowed}), not {_type_name(value)}")
    if value not in options:
        raise CaseError(f"{what} {v.shown(value)} is not one of {allowed}")
    return value


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise CaseError(f"{what} must be an array of strings")
    return list(value)


def _checked(what: str, check: Any, *args: Any) -> Any:
    """A production validator's result, its InvalidInput turned into a CaseError."""
    try:
        return check(*args)
    except InvalidInput as exc:
        raise CaseError(f"{what}: {exc.detail}") from None


def _principal(raw: Any) -> PrincipalEntity:
    table = _table(raw, "principal", PRINCIPAL_KEYS)
    if "kind" not in table:
        raise CaseError(f"principal has no kind (one of {', '.join(PRINCIPAL_TYPES)})")
    kind = _one_of(table["kind"], PRINCIPAL_TYPES, "principal kind")
    status = _one_of(table.get("status", "active"), PRINCIPAL_STATUSES, "principal status")
    attributes = table.get("attributes", {})
    if not isinstance(attributes, dict):
        raise CaseError(f"principal attributes must be a table, not {_type_name(attributes)}")
    stored = _checked("principal attributes", validate_attributes, kind, attributes)
    return principal_entity(kind, status, stored)


def _customer(raw: Any) -> Attrs:
    table = _table(raw, "customer", CUSTOMER_KEYS)
    country = _checked("customer", v.country, table.get("country", DEFAULT_COUNTRY))
    lists = {
        name: _checked(
            "customer", v.slug_list, _strings(table.get(name, []), f"customer {name}"), name
        )
        for name in ("opt_outs", "sensitive_topics")
    }
    deleted = table.get("deleted", False)
    if not isinstance(deleted, bool):
        raise CaseError(f"customer deleted must be true or false, not {_type_name(deleted)}")
    return customer_attrs(country, lists["opt_outs"], lists["sensitive_topics"], deleted)


def _context(raw: Any) -> Attrs:
    if not isinstance(raw, dict):
        raise CaseError(f"context must be a table, not {_type_name(raw)}")
    out: list[tuple[str, Value]] = []
    for name, value in raw.items():
        if isinstance(value, bool | str):
            out.append((name, value))
        elif isinstance(value, int):
            if not CEDAR_LONG[0] <= value <= CEDAR_LONG[1]:
                raise CaseError(f"context {name} does not fit a Cedar Long")
            out.append((name, value))
        elif isinstance(value, list) and all(isinstance(x, str) for x in value):
            out.append((name, tuple(sorted(set(value)))))  # a Cedar Set
        else:
            raise CaseError(
                f"context {name} is {_type_name(value)}; Cedar context values here are "
                "strings, integers, booleans or arrays of strings"
            )
    return tuple(sorted(out))


def parse_case(raw: Any, file: Path, line: int) -> PolicyCase:
    """One ``[[case]]`` table as a ``PolicyCase``; CaseError says what is wrong."""
    table = _table(raw, "case", CASE_KEYS)
    if "name" not in table:
        raise CaseError("missing name")
    name = _string(table["name"], "name").strip()
    if not name:
        raise CaseError("name is empty")
    if "expect" not in table:
        raise CaseError('missing expect ("allow" or "deny")')
    expect = _one_of(table["expect"], EXPECTATIONS, "expect")
    action = _string(table.get("action", ACTION_DISCLOSE), "action")
    if "principal" not in table:
        raise CaseError("missing principal (a table with at least kind)")
    principal = _principal(table["principal"])
    policies = table.get("expect_policies")
    reason = table.get("expect_reason")
    return PolicyCase(
        file=file,
        line=line,
        name=name,
        input=cedar_input(
            principal,
            _customer(table.get("customer", {})),
            _context(table.get("context", {})),
            action,
        ),
        expect_allowed=expect == "allow",
        expect_policies=(
            None if policies is None else tuple(sorted(set(_strings(policies, "expect_policies"))))
        ),
        expect_reason=None if reason is None else _string(reason, "expect_reason"),
    )


def _case_label(raw: Any, position: int) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"case {name!r}" if isinstance(name, str) and name.strip() else f"case #{position}"


def load_case_file(path: Path) -> tuple[list[PolicyCase], list[FileProblem]]:
    """The file's cases, or (when anything in it is wrong) no cases and every problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [FileProblem(path, 1, f"cannot be read: {exc.strerror or exc}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [], [FileProblem(path, line, "is not UTF-8 text")]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [], [_toml_problem(path, text, exc)]

    problems = [
        FileProblem(path, _key_line(text, key), f"unknown top-level key {key!r} (only [[case]])")
        for key in doc
        if key != "case"
    ]
    raw_cases = doc.get("case", [])
    if not isinstance(raw_cases, list):
        problems.append(FileProblem(path, _key_line(text, "case"), "case must be [[case]] tables"))
        raw_cases = []
    if not raw_cases and not problems:
        problems.append(FileProblem(path, 1, "has no [[case]] tables"))
    headers = _header_lines(text, len(raw_cases))
    fallback = _key_line(text, "case")
    cases: list[PolicyCase] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(raw_cases, start=1):
        line = headers[position - 1] if headers else fallback
        try:
            case = parse_case(raw, path, line)
        except CaseError as exc:
            problems.append(FileProblem(path, line, f"{_case_label(raw, position)}: {exc}"))
            continue
        if case.name in seen:
            problems.append(
                FileProblem(
                    path,
                    line,
                    f"case {case.name!r}: the name is already used at line {seen[case.name]}",
                )
            )
        seen.setdefault(case.name, line)
        cases.append(case)
    return ([], problems) if problems else (cases, [])


# -- running ----------------------------------------------------------------------------


def run_case(engine: PolicyEngine, case: PolicyCase) -> CaseResult:
    explanation = engine.explain(case.input)
    decision = explanation.decision
    problems = [f"Cedar: {e}" for e in explanation.errors]
    if not problems:
        if decision.allowed != case.expect_allowed:
            got = "allow" if decision.allowed else "deny"
            problems.append(f"expected {case.expected}, got {got}: {decision.reason}")
        if case.expect_policies is not None:
            unknown = [p for p in case.expect_policies if p not in engine.policies]
            if unknown:
                problems.append(f"expect_policies names {', '.join(unknown)}: not in the set")
            if case.expect_policies != decision.policy_ids:
                problems.append(
                    f"expected decided by [{', '.join(case.expect_policies)}], "
                    f"got [{', '.join(decision.policy_ids)}]"
                )
        if case.expect_reason is not None and case.expect_reason not in decision.reason:
            problems.append(
                f"expected the reason to contain {case.expect_reason!r}, got {decision.reason!r}"
            )
    return CaseResult(case, explanation, tuple(problems))


def run_files(engine: PolicyEngine, files: Iterable[Path]) -> SuiteReport:
    """Every case of every valid file, in file order; invalid files are reported, not run."""
    paths = tuple(files)
    results: list[CaseResult] = []
    problems: list[FileProblem] = []
    for path in paths:
        cases, file_problems = load_case_file(path)
        problems.extend(file_problems)
        results.extend(run_case(engine, case) for case in cases)
    return SuiteReport(paths, tuple(results), tuple(problems), tuple(sorted(engine.policies)))


def engine_for(settings: Settings, policy_dir: Path | None = None) -> PolicyEngine:
    """The policy set production would load, with ``policy_dir`` (when given) in place of
    the ``policy_dir`` setting: same-named files replace shipped ones, others add."""
    if policy_dir is not None:
        settings = settings.with_overrides(policy_dir=str(policy_dir))
    return PolicyEngine.load(settings)


__all__ = [
    "CaseError",
    "CaseResult",
    "FileProblem",
    "PolicyCase",
    "SuiteReport",
    "engine_for",
    "find_case_files",
    "load_case_file",
    "parse_case",
    "run_case",
    "run_files",
]
