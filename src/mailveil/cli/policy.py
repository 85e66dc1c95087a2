"""`mailveil policy check|test|validate`: explain a decision, run policy test cases, list
the loaded policy set. The logic lives in mailveil.policy (engine, facts, testing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailveil.cli.common import cell, console, database, emit, fail, friendly_errors, say
from mailveil.contacts.customers import get_customer_by_external_id
from mailveil.contacts.principals import get_principal_by_external_id
from mailveil.policy import PolicyEngine
from mailveil.policy.engine import (
    NAMESPACE,
    PRINCIPAL_TYPES,
    Explanation,
    PolicyInput,
    policy_sources,
)
from mailveil.policy.engine import Value as CedarValue
from mailveil.policy.facts import policy_input
from mailveil.policy.testing import (
    CaseResult,
    SuiteReport,
    engine_for,
    find_case_files,
    run_files,
)

app = typer.Typer(help="Cedar policies: explain, test, validate.", no_args_is_help=True)

EXIT_DENIED = 1
EXIT_USAGE = 2


@contextmanager
def _undecided() -> Iterator[None]:
    """`policy check` exits 1 only for "denied": any error before a decision exits 2."""
    try:
        yield
    except typer.Exit as exc:
        if exc.exit_code == 1:
            raise typer.Exit(EXIT_USAGE) from None
        raise


def _folder(path: Path | None, what: str) -> None:
    if path is not None and not path.is_dir():
        fail(f"{what} {path} is not a folder", code=EXIT_USAGE)


def _short_type(entity_type: str) -> str:
    return entity_type.removeprefix(f"{NAMESPACE}::")


def _literal(value: CedarValue) -> str:
    """A fact as Cedar reads it (a set as a list, strings quoted)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


# -- check ------------------------------------------------------------------------------


@app.command()
def check(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option(help="KIND:EXTERNAL_ID, e.g. seller:s-1001")],
    customer: Annotated[str, typer.Option(help="customer external id")],
    purpose: Annotated[str, typer.Option(help="order, support, notification, ...")],
    ref: Annotated[str | None, typer.Option(help="the order, case or template")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the explanation as JSON")] = False,
) -> None:
    """Explain, offline, whether a disclosure would be allowed and which policies decide.

    Reads the facts from the database and evaluates the loaded policy set; nothing is
    disclosed and nothing is written to the ledger. Exit status: 0 allowed, 1 denied,
    2 no decision (bad arguments, unknown principal or customer, broken configuration)."""
    kind, sep, ext = principal.partition(":")
    if not sep or not kind or not ext:
        fail("--principal must be KIND:EXTERNAL_ID, e.g. seller:s-1001", code=EXIT_USAGE)
    if kind not in PRINCIPAL_TYPES:
        fail(
            f"--principal kind {kind!r} is not one of {', '.join(PRINCIPAL_TYPES)}",
            code=EXIT_USAGE,
        )
    settings = ctx.obj.settings()
    with _undecided(), friendly_errors():
        engine = PolicyEngine.load(settings)
        with database(settings) as factory, factory() as session:  # read only
            found = get_principal_by_external_id(session, kind, ext)
            target = get_customer_by_external_id(session, customer)
            inp = policy_input(session, settings, target.id, found.id, purpose, ref)
            principal_name, customer_name = f"{found.kind}:{found.external_id}", target.external_id
        explanation = engine.explain(inp)
    if as_json:
        doc = {
            "principal": principal_name,
            "customer": customer_name,
            "purpose": purpose,
            "ref": ref,
            **explanation.to_dict(),
        }
        emit(json.dumps(doc, indent=2))
    else:
        _show_explanation(explanation, inp, principal_name, customer_name, purpose)
    if not explanation.decision.allowed:
        raise typer.Exit(EXIT_DENIED)


def _show_explanation(
    explanation: Explanation, inp: PolicyInput, principal: str, customer: str, purpose: str
) -> None:
    decision = explanation.decision
    verdict = "[bold green]ALLOWED[/]" if decision.allowed else "[bold red]DENIED[/]"
    say(
        f"{verdict}: {escape(principal)} {'may' if decision.allowed else 'may not'} be given "
        f"the alias of customer {escape(customer)} for purpose {escape(repr(purpose))}"
    )
    say(f"reason: {escape(decision.reason)}")
    if decision.policy_ids:
        say(f"decided by: {escape(', '.join(decision.policy_ids))}")
    else:
        say("decided by: no policy permits it (the default is deny)")

    holding = [*explanation.permitting, *explanation.forbidding]
    if holding:
        table = Table(
            "effect", "policy", "file", "decided", "reason", title="policies whose conditions hold"
        )
        for info in holding:
            table.add_row(
                cell(info.effect),
                cell(info.id),
                cell(info.file),
                cell("yes" if info.id in decision.policy_ids else ""),
                cell(info.reason),
            )
        console.print(table)
    else:
        say("no policy's conditions hold for this request")

    facts = Table("entity", "fact", "value", title="facts given to Cedar")
    groups = (
        (f"principal ({inp.principal_type})", inp.principal),
        ("customer", inp.customer),
        (f"context ({inp.action})", inp.context),
    )
    for entity, attrs in groups:
        for name, value in attrs:
            facts.add_row(cell(entity), cell(name), cell(_literal(value)))
    console.print(facts)
    for error in explanation.errors:
        say(f"[bold red]Cedar error:[/] {escape(error)}")


# -- test -------------------------------------------------------------------------------


@app.command("test")
def test_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="folder of *.toml case files")],
    policies: Annotated[
        Path | None,
        typer.Option(help="policy folder to test instead of the policy_dir setting"),
    ] = None,
) -> None:
    """Run the [[case]] tables of every *.toml file in DIRECTORY against the policy set.

    The set is the shipped policies with the policy_dir setting (or --policies) over them:
    a same-named file replaces a shipped one, others add. Exit status: 0 every case passed,
    1 a case failed or a file is invalid, 2 no case files (or bad arguments)."""
    settings = ctx.obj.settings()
    _folder(directory, "case folder")
    _folder(policies, "--policies")
    files = find_case_files(directory)
    if not files:
        fail(f"no *.toml case files in {directory}", code=EXIT_USAGE)
    with friendly_errors(init_hint=False):
        engine = engine_for(settings, policies)
    report = run_files(engine, files)
    for problem in report.problems:
        say(f"[bold red]invalid:[/] {escape(str(problem))}", err=True)
    if report.results:
        _show_results(report)
    for result in report.failed:
        case = result.case
        for why in result.problems:
            say(
                f"[bold red]{result.verdict.upper()}[/] {escape(str(case.file))}:{case.line} "
                f"{escape(case.name)}: {escape(why)}"
            )
    say(_summary(report))
    if report.undecided_policies:
        say(f"policies no case was decided by: {escape(', '.join(report.undecided_policies))}")
    if not report.passed:
        raise typer.Exit(1)


def _decided_cell(result: CaseResult) -> str:
    if result.explanation.errors:
        return "-"
    return ", ".join(result.decided_by) or "(default deny)"


def _show_results(report: SuiteReport) -> None:
    table = Table("file", "case", "expected", "got", "verdict", "decided by")
    verdict = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "error": "[red]ERROR[/]"}
    for result in report.results:
        case = result.case
        table.add_row(
            cell(f"{case.file.name}:{case.line}"),
            cell(case.name),
            cell(case.expected),
            cell("-" if result.explanation.errors else result.got),
            verdict[result.verdict],
            cell(_decided_cell(result)),
        )
    console.print(table)


def _summary(report: SuiteReport) -> str:
    passed = sum(r.passed for r in report.results)
    text = f"{len(report.results)} cases: {passed} passed, {len(report.failed)} failed"
    if report.problems:
        invalid = len(report.invalid_files)
        text += f"; {invalid} invalid file{'s' if invalid != 1 else ''} not run"
    return text


# -- validate ---------------------------------------------------------------------------


@app.command()
def validate(
    ctx: typer.Context,
    policy_dir: Annotated[
        Path | None,
        typer.Argument(help="policy folder to check instead of the policy_dir setting"),
    ] = None,
) -> None:
    """Load and validate the policy set against the schema, and list its policies.

    Exit status: 0 valid, 1 a file does not parse, validate or carry its annotations."""
    settings = ctx.obj.settings()
    _folder(policy_dir, "policy folder")
    with friendly_errors(init_hint=False):
        engine = engine_for(settings, policy_dir)
    shipped = {s.name: s.label for s in policy_sources(settings.with_overrides(policy_dir=""))}
    files = Table("file", "loaded from", "note", title="policy files")
    for source in engine.sources:
        note = ""
        if source.name not in shipped:
            note = "added"
        elif source.label != shipped[source.name]:
            note = "replaces the shipped file" if source.text.strip() else "empty: switches it off"
        files.add_row(cell(source.name), cell(source.label), cell(note))
    console.print(files)
    table = Table("policy", "effect", "principals", "actions", "file", "reason", title="policies")
    for info in sorted(engine.policies.values(), key=lambda p: (p.file, p.id)):
        types = info.principal_types
        table.add_row(
            cell(info.id),
            cell(info.effect),
            cell("any" if types is None else ", ".join(sorted(map(_short_type, types)))),
            cell("any" if info.actions is None else ", ".join(sorted(info.actions))),
            cell(info.file),
            cell(info.reason),
        )
    console.print(table)
    say(f"[green]valid[/]: {len(engine.policies)} policies in {len(engine.sources)} files")
