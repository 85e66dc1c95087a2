"""Operator policy test cases: loading (errors with file and line), running, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailveil.config import Settings
from mailveil.errors import InvalidInput
from mailveil.policy import PolicyEngine, PolicyInput
from mailveil.policy.facts import context_attrs, customer_attrs, principal_attrs
from mailveil.policy.testing import (
    FileProblem,
    SuiteReport,
    engine_for,
    find_case_files,
    load_case_file,
    run_files,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policy-tests"

SELLER_OK = """
[[case]]
name = "seller inside the window"
principal = { kind = "seller" }
context = { purpose = "order", window_days = 90, order_age_days = 10 }
expect = "allow"
expect_policies = ["seller-recent-order"]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def run_dir(engine: PolicyEngine, folder: Path) -> SuiteReport:
    return run_files(engine, find_case_files(folder))


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    folder = tmp_path / "cases"
    folder.mkdir()
    return folder


@pytest.fixture
def shipped(settings: Settings) -> PolicyEngine:
    return engine_for(settings)


def test_the_examples_pass_and_every_shipped_policy_decides_one(shipped: PolicyEngine) -> None:
    report = run_dir(shipped, EXAMPLES)
    assert report.problems == ()
    assert [(r.case.name, r.problems) for r in report.failed] == []
    assert report.passed and len(report.results) >= len(shipped.policies)
    # A policy added to the shipped set without an example case fails here.
    assert report.undecided_policies == ()
    actions = {r.case.input.action for r in report.results}
    assert {"disclose", "list", "request_reveal"} <= actions


def test_a_case_is_given_the_facts_production_builds(cases: Path) -> None:
    path = write(
        cases,
        "shape.toml",
        """
[[case]]
name = "service, defaults"
principal = { kind = "service", attributes = { templates = ["b-tmpl", "a-tmpl", "b-tmpl"] } }
context = { purpose = "notification", window_days = 90, template = "a-tmpl" }
expect = "allow"

[[case]]
name = "employee, everything given"
action = "list"
principal = { kind = "employee", status = "suspended", attributes = { team = " t1 ", role = "r" } }
customer = { country = "fr", opt_outs = ["x", "a"], sensitive_topics = ["p"], deleted = true }
context = { purpose = "support", flags = ["b", "a", "b"], n = 3, on = true }
expect = "deny"
""",
    )
    (service, employee), problems = load_case_file(path)
    assert problems == []
    assert (service.line, employee.line) == (2, 8)
    assert service.input == PolicyInput(
        "Service",
        principal_attrs("service", "active", {"templates": ["a-tmpl", "b-tmpl"]}),
        customer_attrs("DE", (), (), False),
        context_attrs("service", "notification", "a-tmpl", 90),
        "disclose",
    )
    assert employee.input == PolicyInput(
        "Employee",
        principal_attrs("employee", "suspended", {"team": "t1", "role": "r"}),
        customer_attrs("FR", ("a", "x"), ("p",), True),
        (("flags", ("a", "b")), ("n", 3), ("on", True), ("purpose", "support")),
        "list",
    )
    assert (service.expected, employee.expected) == ("allow", "deny")
    assert service.expect_policies is None and service.expect_reason is None


def test_passing_and_failing_cases(shipped: PolicyEngine, cases: Path) -> None:
    write(
        cases,
        "run.toml",
        SELLER_OK
        + """
[[case]]
name = "seller outside the window, reason checked"
principal = { kind = "seller" }
context = { purpose = "order", window_days = 90, order_age_days = 91 }
expect = "deny"
expect_policies = []
expect_reason = "in the last 90 days"

[[case]]
name = "wrong decision"
principal = { kind = "seller" }
context = { purpose = "order", window_days = 90, order_age_days = 91 }
expect = "allow"

[[case]]
name = "wrong deciding policies"
principal = { kind = "seller", status = "suspended" }
context = { purpose = "marketing", window_days = 90, order_age_days = 1 }
expect = "deny"
expect_policies = ["seller-purpose", "no-such-policy"]

[[case]]
name = "wrong reason"
principal = { kind = "seller" }
context = { purpose = "marketing", window_days = 90 }
expect = "deny"
expect_reason = "the customer has been deleted"

[[case]]
name = "context Cedar rejects"
principal = { kind = "seller" }
context = { purpose = "order" }
expect = "deny"
""",
    )
    report = run_dir(shipped, cases)
    assert report.problems == ()
    by_name = {r.case.name: r for r in report.results}
    assert [r.verdict for r in report.results] == ["pass", "pass", "fail", "fail", "fail", "error"]
    assert by_name["seller inside the window"].decided_by == ("seller-recent-order",)
    assert by_name["wrong decision"].problems == (
        "expected allow, got deny: no order with this seller in the last 90 days",
    )
    assert by_name["wrong deciding policies"].problems == (
        "expect_policies names no-such-policy: not in the set",
        "expected decided by [no-such-policy, seller-purpose], "
        "got [principal-suspended, seller-purpose]",
    )
    (why,) = by_name["wrong reason"].problems
    assert why.startswith("expected the reason to contain 'the customer has been deleted', got ")
    # Cedar's own message, and the case fails whatever it expected.
    (cedar,) = by_name["context Cedar rejects"].problems
    assert cedar.startswith("Cedar: ") and "window_days" in cedar
    assert not report.passed
    assert [r.case.name for r in report.failed] == list(by_name)[2:]


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        (SELLER_OK + '\n[[case]]\nname = "x"\nexpect = allow\n', 11, 10, "Invalid value"),
        ('[[case]]\nname = "x"\nname = "y"\n', 3, 11, "Cannot overwrite a value"),
        (SELLER_OK + 'name = """never closed\n', 8, None, "at the end of the file"),
        ("[[case]\n", 1, 7, ""),
    ],
)
def test_malformed_toml_is_reported_with_its_line(
    shipped: PolicyEngine, cases: Path, text: str, line: int, column: int | None, fragment: str
) -> None:
    bad = write(cases, "a-bad.toml", text)
    write(cases, "b-good.toml", SELLER_OK)
    report = run_dir(shipped, cases)
    (problem,) = report.problems
    assert (problem.file, problem.line, problem.column) == (bad, line, column)
    assert problem.message.startswith("TOML syntax error: ") and fragment in problem.message
    where = f"{line}:{column}" if column else f"{line}"
    assert str(problem).startswith(f"{bad}:{where}: TOML syntax error")
    # The other file still ran.
    assert [(r.case.file, r.verdict) for r in report.results] == [(cases / "b-good.toml", "pass")]
    assert report.invalid_files == (bad,) and not report.passed


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('name = "n"\nprincipal = { kind = "seller" }\n', 'missing expect ("allow" or "deny")'),
        ('name = "n"\nprincipal = { kind = "robot" }\nexpect = "deny"\n', "kind 'robot' is not"),
        ('name = "n"\nprincipal = { kind = "seller", status = 1 }\nexpect = "deny"\n', "status"),
        ('name = "n"\nprincipal = { kind = "seller" }\nexpect = "maybe"\n', "expect 'maybe'"),
        ('name = "n"\nexpect = "deny"\n', "missing principal"),
        ('principal = { kind = "seller" }\nexpect = "deny"\n', "missing name"),
        ('name = "n"\nprincipal = { kind = "seller" }\nexpect = "deny"\nexpct = 1\n', "'expct'"),
        (
            'name = "n"\nprincipal = { kind = "seller" }\nexpect = "deny"\ncontext = { x = 1.5 }\n',
            "context x is a float",
        ),
        (
            'name = "n"\nprincipal = { kind = "seller" }\nexpect = "deny"\n'
            'customer = { opt_outs = "marketing" }\n',
            "customer opt_outs must be an array of strings",
        ),
        (
            'name = "n"\nprincipal = { kind = "seller" }\nexpect = "deny"\n'
            'customer = { country = "XX" }\n',
            "country XX is not an ISO 3166-1 alpha-2 code",
        ),
        (
            'name = "n"\nprincipal = { kind = "seller" }\nexpect = "deny"\n'
            "customer = { deleted = 1 }\n",
            "customer deleted must be true or false, not an integer",
        ),
        (
            'name = "n"\nprincipal = { kind = "service", attributes = { template = ["a"] } }\n'
            'expect = "deny"\n',
            "unknown attribute 'template' for a service",
        ),
        (
            'name = "n"\nprincipal = { kind = "seller" }\nexpect = "deny"\n'
            'expect_policies = "seller-purpose"\n',
            "expect_policies must be an array of strings",
        ),
        ('name = "n"\nprincipal = "seller"\nexpect = "deny"\n', "principal must be a table"),
    ],
)
def test_a_malformed_case_is_reported_at_its_header(
    shipped: PolicyEngine, cases: Path, body: str, fragment: str
) -> None:
    # Two good cases around the bad one; the header is indented and spaced, as TOML allows.
    text = SELLER_OK + "\n# the bad one\n  [[ case ]]\n" + body + SELLER_OK.replace("inside", "in")
    bad = write(cases, "bad.toml", text)
    write(cases, "good.toml", SELLER_OK)
    report = run_dir(shipped, cases)
    (problem,) = report.problems
    assert problem.file == bad
    assert problem.line == 10, problem
    assert fragment in problem.message, problem.message
    # None of the invalid file's cases ran; the other file's did.
    assert [r.case.file.name for r in report.results] == ["good.toml"]


def test_every_bad_case_of_a_file_is_reported(cases: Path) -> None:
    path = write(
        cases,
        "two.toml",
        '[[case]]\nname = "a"\n\n[[case]]\nname = "a"\nprincipal = { kind = "seller" }\n'
        'expect = "deny"\n\n[[case]]\nname = "a"\nprincipal = { kind = "seller" }\n'
        'expect = "deny"\n',
    )
    loaded, problems = load_case_file(path)
    assert loaded == []
    assert [(p.line, p.message) for p in problems] == [
        (1, 'case \'a\': missing expect ("allow" or "deny")'),
        (9, "case 'a': the name is already used at line 4"),
    ]


def test_a_header_inside_a_multiline_string_is_not_a_case(cases: Path) -> None:
    path = write(
        cases,
        "strings.toml",
        '[[case]]\nname = """\n[[case]]\n"""\nprincipal = { kind = "seller" }\nexpect = "deny"\n'
        '\n[[case]]\nname = "b"\nprincipal = { kind = "nobody" }\nexpect = "deny"\n',
    )
    _, problems = load_case_file(path)
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [(8, "case 'b'")]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "has no [[case]] tables"),
        ("# only a comment\n", 1, "has no [[case]] tables"),
        ('\n\ntitle = "x"\n' + SELLER_OK, 3, "unknown top-level key 'title'"),
        ('\ncase = "x"\n', 2, "case must be [[case]] tables"),
    ],
)
def test_file_level_problems(cases: Path, text: str, line: int, fragment: str) -> None:
    path = write(cases, "f.toml", text)
    _, problems = load_case_file(path)
    assert [(p.line, fragment in p.message) for p in problems] == [(line, True)], problems


def test_a_file_that_is_not_utf8_names_the_line(cases: Path) -> None:
    path = cases / "latin1.toml"
    path.write_bytes(b'[[case]]\nname = "caf\xe9"\n')
    assert load_case_file(path) == ([], [FileProblem(path, 2, "is not UTF-8 text")])


def test_case_files_are_the_toml_files_of_the_folder(cases: Path, tmp_path: Path) -> None:
    for name in ("b.toml", "a.toml", "notes.txt"):
        write(cases, name, "")
    (cases / "sub").mkdir()
    write(cases / "sub", "c.toml", "")
    assert find_case_files(cases) == [cases / "a.toml", cases / "b.toml"]
    with pytest.raises(InvalidInput, match="is not a folder"):
        find_case_files(tmp_path / "missing")


OVERRIDE_SELLERS = """
@id("seller-order-or-return")
@reason("the customer ordered from this seller within the window, about an order or a return")
@deny_reason("no order with this seller in the last {window_days} days")
permit (
  principal is Mailveil::Seller,
  action == Mailveil::Action::"disclose",
  resource is Mailveil::Customer
)
when {
  ["order", "return"].contains(context.purpose) &&
  context has order_age_days && context.order_age_days <= context.window_days
};
"""

RETURN_CASES = """
[[case]]
name = "a seller may write about a return"
principal = { kind = "seller" }
context = { purpose = "return", window_days = 90, order_age_days = 5 }
expect = "allow"
expect_policies = ["seller-order-or-return"]
"""


def test_an_operator_file_replaces_the_shipped_one(
    settings: Settings, cases: Path, policy_dir: Path, tmp_path: Path
) -> None:
    write(policy_dir, "sellers.cedar", OVERRIDE_SELLERS)
    write(cases, "returns.toml", RETURN_CASES)
    write(cases, "shipped-sellers.toml", (EXAMPLES / "sellers.toml").read_text())

    shipped = run_dir(engine_for(settings), cases)
    assert {r.case.file.name for r in shipped.failed} == {"returns.toml"}
    assert [r.problems for r in shipped.failed] == [
        (
            'expected allow, got deny: a seller is only given aliases for purpose "order"',
            "expect_policies names seller-order-or-return: not in the set",
            "expected decided by [seller-order-or-return], got [seller-purpose]",
        )
    ]

    # The same folder given as the policy_dir setting, or explicitly over another setting.
    other = tmp_path / "other-policies"
    other.mkdir()
    write(other, "sellers.cedar", "")  # would switch sellers off entirely
    for engine in (
        engine_for(settings.with_overrides(policy_dir=str(policy_dir))),
        engine_for(settings.with_overrides(policy_dir=str(other)), policy_dir),
    ):
        assert "seller-purpose" not in engine.policies
        report = run_dir(engine, cases)
        verdicts = {(r.case.file.name, r.case.name): r.verdict for r in report.results}
        assert verdicts[("returns.toml", "a seller may write about a return")] == "pass"
        # The shipped examples that named the replaced policies now fail, and say why.
        failed = {name for (file, name), v in verdicts.items() if v != "pass"}
        assert failed == {
            "seller inside the window may write about an order",
            "an order exactly window_days old still counts",
            "seller may not write for marketing even after a recent order",
        }
