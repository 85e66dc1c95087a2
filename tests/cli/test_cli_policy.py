"""`mailveil policy check|test|validate`: explanations from a real database on both
backends (exit 0 allowed, 1 denied, 2 no decision), operator case runs, the loaded set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import (
    Cli,
    Run,
    add_employee,
    add_order,
    add_seller,
    assert_no_address,
    customer_id,
    ledger_entries,
    open_db,
    table_rows,
)
from sqlalchemy import select

from mailveil.config import Settings
from mailveil.contacts.disclosures import DisclosureRequest, disclose_batch
from mailveil.contacts.models import Alias, Principal
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case
from mailveil.ledger.append import Ledger
from mailveil.policy.engine import Decision, PolicyEngine, PolicyInput, policy_sources
from mailveil.relay.routes import lookup_route

ADDRESSES = {"c-1": "olga.policy@example.com", "c-2": "piet.policy@example.org"}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policy-tests"


@dataclass
class Shop:
    cli: Cli
    settings: Settings


@pytest.fixture
def shop(any_backend_cli: Cli) -> Shop:
    """Initialised; seller s-1 has a recent order from c-1 only; employee e-1 has an open
    case of c-2 assigned to them."""
    cli = any_backend_cli
    cli.ok("init")
    Path("c.csv").write_text(
        "external_id,email,country\n" + "".join(f"{k},{a},DE\n" for k, a in ADDRESSES.items())
    )
    cli.ok("customers", "import", "c.csv")
    settings = cli.settings()
    with open_db(settings) as db:
        add_order(db, "o-1", "c-1", add_seller(db, "s-1"))
        employee = add_employee(db, "e-1")
        with db.begin() as session:
            create_case(
                session, external_id="k-1", customer_id=customer_id(db, "c-2"), assignee_id=employee
            )
    return Shop(cli, settings)


def check(
    cli: Cli,
    principal: str,
    customer: str,
    purpose: str,
    *extra: str,
    env: dict[str, str | None] | None = None,
) -> Run:
    args = ["--principal", principal, "--customer", customer, "--purpose", purpose, *extra]
    return cli("policy", "check", *args, env=env)


def test_check_explains_allowed_and_denied(shop: Shop) -> None:
    cli = shop.cli
    allowed = check(cli, "seller:s-1", "c-1", "order", "--ref", "o-1")
    assert allowed.code == 0, str(allowed)
    lines = allowed.stdout.splitlines()
    assert lines[0] == (
        "ALLOWED: seller:s-1 may be given the alias of customer c-1 for purpose 'order'"
    )
    assert "reason: the customer ordered from this seller within the contact window" in lines
    assert "decided by: seller-recent-order" in lines
    rows = table_rows(allowed.stdout)
    assert rows[0][:4] == ["permit", "seller-recent-order", "sellers.cedar", "yes"]
    facts = {(r[0], r[1]): r[2] for r in rows[1:]}
    assert facts == {
        ("principal (Seller)", "status"): '"active"',
        ("customer", "country"): '"DE"',
        ("customer", "deleted"): "false",
        ("customer", "opt_outs"): "[]",
        ("customer", "sensitive_topics"): "[]",
        ("context (disclose)", "order_age_days"): "0",
        ("context (disclose)", "purpose"): '"order"',
        ("context (disclose)", "window_days"): "90",
    }

    denied = check(cli, "seller:s-1", "c-2", "order")
    assert denied.code == 1, str(denied)
    assert denied.stdout.startswith(
        "DENIED: seller:s-1 may not be given the alias of customer c-2 for purpose 'order'\n"
        "reason: no order with this seller in the last 90 days\n"
        "decided by: no policy permits it (the default is deny)\n"
        "no policy's conditions hold for this request\n"
    ), str(denied)
    assert ("context (disclose)", "order_age_days") not in {
        (r[0], r[1]) for r in table_rows(denied.stdout)
    }

    # A forbid decides; the permit that also holds is listed, not marked as deciding.
    forbidden = check(cli, "seller:s-1", "c-1", "marketing")
    assert forbidden.code == 1, str(forbidden)
    assert "decided by: seller-purpose" in forbidden.stdout.splitlines()
    assert [r[:4] for r in table_rows(forbidden.stdout)[:2]] == [
        ["permit", "seller-recent-order", "sellers.cedar", ""],
        ["forbid", "seller-purpose", "sellers.cedar", "yes"],
    ]

    employee = check(cli, "employee:e-1", "c-2", "support")
    assert employee.code == 0, str(employee)
    assert "decided by: employee-assigned-case" in employee.stdout.splitlines()

    for run in (allowed, denied, forbidden, employee):
        assert_no_address(run, list(ADDRESSES.values()))
    # Explaining discloses nothing.
    assert ledger_entries(shop.settings) == []


def test_check_json(shop: Shop) -> None:
    run = check(shop.cli, "employee:e-1", "c-1", "support", "--json")
    assert run.code == 1, str(run)
    doc = json.loads(run.stdout)
    assert doc["principal"] == "employee:e-1" and doc["customer"] == "c-1"
    assert (doc["allowed"], doc["decided_by"], doc["permitting"], doc["forbidding"]) == (
        False,
        [],
        [],
        [],
    )
    assert doc["reason"] == "no open support case of this customer is assigned to this employee"
    assert doc["request"]["request"]["context"] == {
        "open_case": False,
        "purpose": "support",
        "window_days": 90,
    }
    ok = json.loads(check(shop.cli, "employee:e-1", "c-2", "support", "--json").stdout)
    assert ok["allowed"] is True
    assert ok["permitting"] == [
        {
            "id": "employee-assigned-case",
            "effect": "permit",
            "reason": "an open support case of this customer is assigned to this employee",
            "file": "employees.cedar",
        }
    ]
    assert_no_address(run, list(ADDRESSES.values()))


class RecordingEngine(PolicyEngine):
    """The real engine, keeping every input production asks it to decide."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(policy_sources(settings))
        self.seen: list[PolicyInput] = []

    def decide_many(self, inputs: Sequence[PolicyInput]) -> list[Decision]:
        self.seen.extend(inputs)
        return super().decide_many(inputs)


# (principal, customer, purpose, ref); in the shop, plus service n-1 owning template t-1.
SAME_INPUT_CASES = [
    ("seller:s-1", "c-1", "order", "o-1"),  # allowed: a recent order
    ("seller:s-1", "c-2", "order", None),  # denied: no order
    ("seller:s-1", "c-1", "marketing", None),  # forbidden purpose
    ("employee:e-1", "c-2", "support", None),  # allowed: an assigned open case
    ("employee:e-1", "c-1", "support", None),  # denied: no case
    ("service:n-1", "c-1", "notification", "t-1"),  # allowed: its template
    ("service:n-1", "c-2", "notification", "other"),  # denied: not its template
]


def test_check_gives_cedar_what_production_gives_it(shop: Shop) -> None:
    """For each case, the Cedar request ``policy check --json`` shows is the one a disclosure
    (``disclose_batch``, behind the API, the workers and the employee lookup) decides on, with
    the same verdict; for a pair with an alias, also the relay's contact decision (its purpose
    by kind, no ref) equals the check's for that purpose without a ref."""
    with open_db(shop.settings) as db:
        with db.begin() as session:
            create_principal(
                session, kind="service", external_id="n-1", attributes={"templates": ["t-1"]}
            )
        ids = {ext: customer_id(db, ext) for ext in ADDRESSES}
        with db() as session:
            principals = {
                f"{p.kind}:{p.external_id}": p.id for p in session.scalars(select(Principal))
            }

    def checked(principal: str, customer: str, purpose: str, ref: str | None) -> dict[str, Any]:
        extra = ("--ref", ref) if ref else ()
        run = check(shop.cli, principal, customer, purpose, *extra, "--json")
        assert run.code in (0, 1), str(run)
        doc: dict[str, Any] = json.loads(run.stdout)
        assert run.code == (0 if doc["allowed"] else 1)
        return doc

    cli_docs = [checked(*case) for case in SAME_INPUT_CASES]
    relay_purpose = {"seller": "order", "employee": "support", "service": "notification"}
    relay_cases = sorted({(p, c) for p, c, _, _ in SAME_INPUT_CASES})
    relay_docs = {
        (p, c): checked(p, c, relay_purpose[p.split(":")[0]], None) for p, c in relay_cases
    }

    engine = RecordingEngine(shop.settings)
    with open_db(shop.settings) as db, db() as session:
        results = disclose_batch(
            session,
            settings=shop.settings,
            policy=engine,
            ledger=Ledger.load(shop.settings),
            requests=[
                DisclosureRequest(ids[c], principals[p], purpose, ref)
                for p, c, purpose, ref in SAME_INPUT_CASES
            ],
            actor="test:same-input",
        )
        assert len(engine.seen) == len(SAME_INPUT_CASES)
        for case, doc, inp, result in zip(
            SAME_INPUT_CASES, cli_docs, engine.seen, results, strict=True
        ):
            assert result.error is None, (case, result)
            explained = engine.explain(inp).to_dict()
            assert doc["request"] == explained["request"], case
            assert (doc["allowed"], doc["decided_by"]) == (
                result.allowed,
                list(result.policy_ids),
            ), case
            assert doc["reason"] == result.reason, case
        assert [r.allowed for r in results] == [True, False, False, True, False, True, False]

        # The relay: routes of the pairs that now have an alias (minted by the allowed ones).
        routed = 0
        for principal, customer in relay_cases:
            alias = session.scalar(
                select(Alias.address).where(
                    Alias.customer_id == ids[customer], Alias.principal_id == principals[principal]
                )
            )
            if alias is None:
                continue
            route = lookup_route(session, alias)
            assert route is not None
            inp = route.policy_input(shop.settings)
            doc = relay_docs[(principal, customer)]
            assert doc["request"] == engine.explain(inp).to_dict()["request"], principal
            decision = route.contact_decision(shop.settings, engine)
            assert (doc["allowed"], doc["decided_by"]) == (
                decision.allowed,
                list(decision.policy_ids),
            )
            routed += 1
        assert routed == 3  # s-1/c-1, e-1/c-2, n-1/c-1
        session.rollback()  # nothing of this stays


@pytest.mark.parametrize(
    ("principal", "customer", "message"),
    [
        ("seller:s-9", "c-1", "no seller with external id 's-9'"),
        ("employee:s-1", "c-1", "no employee with external id 's-1'"),
        ("seller:s-1", "c-9", "no customer with external id 'c-9'"),
        ("seller:s-1", "olga.policy@example.com", "must not contain '@'"),
        ("s-1", "c-1", "--principal must be KIND:EXTERNAL_ID"),
        ("robot:r-1", "c-1", "--principal kind 'robot' is not one of seller, employee, service"),
    ],
)
def test_check_without_a_decision_exits_2(
    shop: Shop, principal: str, customer: str, message: str
) -> None:
    run = check(shop.cli, principal, customer, "order")
    assert run.code == 2, str(run)
    assert run.stdout == "" and message in run.flat
    assert run.stderr.startswith("error: ")
    assert_no_address(run, list(ADDRESSES.values()))


def test_check_on_a_broken_setup_exits_2(cli: Cli, tmp_path: Path) -> None:
    run = check(cli, "seller:s-1", "c-1", "order")
    assert run.code == 2, str(run)
    assert "run `mailveil init` first" in run.flat
    cli.ok("init")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.cedar").write_text("permit(")
    run = check(cli, "seller:s-1", "c-1", "order", env={"MAILVEIL_POLICY_DIR": str(broken)})
    assert run.code == 2, str(run)
    assert f"{broken / 'x.cedar'}: Cedar cannot parse it" in run.flat


def test_test_runs_the_example_cases(cli: Cli) -> None:
    run = cli.ok("policy", "test", str(EXAMPLES))
    rows = table_rows(run.stdout)
    assert len(rows) > 20
    assert {r[4] for r in rows} == {"pass"}
    assert {r[0].split(":")[0] for r in rows} >= {
        "sellers.toml",
        "employees.toml",
        "services.toml",
        "guards.toml",
        "lists.toml",
        "reveals.toml",
    }
    assert f"{len(rows)} cases: {len(rows)} passed, 0 failed" in run.stdout.splitlines()
    assert "policies no case was decided by" not in run.stdout
    assert run.stderr == ""


CASES = """
[[case]]
name = "seller inside the window"
principal = { kind = "seller" }
context = { purpose = "order", window_days = 90, order_age_days = 1 }
expect = "allow"

[[case]]
name = "seller without an order"
principal = { kind = "seller" }
context = { purpose = "order", window_days = 90 }
expect = "allow"
"""


def test_test_reports_failures_and_invalid_files(cli: Cli, tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a.toml").write_text(CASES)
    (cases / "b.toml").write_text('[[case]]\nname = "x"\nexpect = allow\n')
    (cases / "c.toml").write_text(
        '# c\n\n[[case]]\nname = "no kind"\nprincipal = {}\nexpect = "deny"\n'
    )
    run = cli("policy", "test", str(cases))
    assert run.code == 1, str(run)
    assert table_rows(run.stdout) == [
        ["a.toml:2", "seller inside the window", "allow", "allow", "pass", "seller-recent-order"],
        ["a.toml:8", "seller without an order", "allow", "deny", "FAIL", "(default deny)"],
    ]
    assert (
        f"FAIL {cases / 'a.toml'}:8 seller without an order: expected allow, got deny: "
        "no order with this seller in the last 90 days"
    ) in run.stdout.splitlines()
    assert run.stderr.splitlines() == [
        f"invalid: {cases / 'b.toml'}:3:10: TOML syntax error: Invalid value",
        f"invalid: {cases / 'c.toml'}:3: case 'no kind': principal has no kind "
        "(one of seller, employee, service)",
    ]
    assert "2 cases: 1 passed, 1 failed; 2 invalid files not run" in run.stdout.splitlines()


def test_test_with_an_operator_policy_folder(cli: Cli, tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a.toml").write_text(CASES)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "sellers.cedar").write_text(
        '@id("any-seller")\n@reason("sellers may write")\n'
        "permit (principal is Mailveil::Seller, action, resource);\n"
    )
    for run in (
        cli.ok("policy", "test", str(cases), "--policies", str(policies)),
        cli.ok("policy", "test", str(cases), env={"MAILVEIL_POLICY_DIR": str(policies)}),
    ):
        assert [r[5] for r in table_rows(run.stdout)] == ["any-seller", "any-seller"]
    # --policies takes the setting's place: its folder replaces, the setting's is not read.
    empty = tmp_path / "empty"
    empty.mkdir()
    run = cli(
        "policy", "test", str(cases), "--policies", str(empty),
        env={"MAILVEIL_POLICY_DIR": str(policies)},
    )  # fmt: skip
    assert run.code == 1 and "1 passed, 1 failed" in run.stdout, str(run)


def test_test_usage_errors_exit_2(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    run = cli("policy", "test", str(tmp_path / "empty"))
    assert run.code == 2 and f"no *.toml case files in {tmp_path / 'empty'}" in run.flat, str(run)
    run = cli("policy", "test", str(tmp_path / "missing"))
    assert run.code == 2 and "is not a folder" in run.flat, str(run)
    run = cli("policy", "test", str(EXAMPLES), "--policies", str(tmp_path / "missing"))
    assert run.code == 2 and "--policies" in run.flat, str(run)


def test_validate_lists_the_policy_set(cli: Cli, tmp_path: Path) -> None:
    run = cli.ok("policy", "validate")
    rows = table_rows(run.stdout)
    policies = {r[0]: r for r in rows if r[1] in {"permit", "forbid"}}
    assert policies["principal-suspended"][1:5] == [
        "forbid",
        "any",
        "disclose, list, request_reveal",
        "guards.cedar",
    ]
    assert policies["seller-recent-order"][1:5] == ["permit", "Seller", "disclose", "sellers.cedar"]
    assert run.stdout.splitlines()[-1] == (
        f"valid: {len(policies)} policies in {len({r[4] for r in policies.values()})} files"
    )

    operator = tmp_path / "policies"
    operator.mkdir()
    (operator / "guards.cedar").write_text("")
    (operator / "extra.cedar").write_text(
        '@id("no-fr")\n@reason("not in France")\n'
        'forbid (principal, action, resource) when { resource.country == "FR" };\n'
    )
    run = cli.ok("policy", "validate", str(operator))
    files = {r[0]: r[1:] for r in table_rows(run.stdout) if r[0].endswith(".cedar")}
    assert files["guards.cedar"] == [str(operator / "guards.cedar"), "empty: switches it off"]
    assert files["extra.cedar"] == [str(operator / "extra.cedar"), "added"]
    assert files["sellers.cedar"] == ["shipped policy sellers.cedar", ""]
    ids = {r[0] for r in table_rows(run.stdout)}
    assert "no-fr" in ids and "principal-suspended" not in ids

    (operator / "extra.cedar").write_text('@id("x")\npermit (principal, action, resource);\n')
    run = cli("policy", "validate", str(operator))
    assert run.code == 1, str(run)
    assert f"{operator / 'extra.cedar'}: policy 'x' has no @reason" in run.flat
    run = cli("policy", "validate", str(tmp_path / "missing"))
    assert run.code == 2, str(run)
