"""`mailveil incidents report ...`: the regulator report (show, export as HTML / PDF / JSON),
the exact list of affected people and its check, the controller's details, the officer's
assessment, submissions (phased updates) and notify / do-not-notify decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mailveil.cli.common import (
    cell,
    console,
    database,
    fail,
    friendly_errors,
    operator_actor,
    say,
    signed_unit,
)
from mailveil.contacts import validation as v
from mailveil.db.session import session_scope
from mailveil.incidents import filings
from mailveil.incidents.controller import (
    FIELDS,
    LABELS,
    controller_details,
    set_controller,
)
from mailveil.incidents.proofs import verify_affected, write_affected
from mailveil.incidents.regulator import regulator_report, render_html
from mailveil.incidents.report_actions import decide, submit
from mailveil.incidents.severity import CHOICES

app = typer.Typer(help="The regulator report of an incident.", no_args_is_help=True)
controller_app = typer.Typer(
    help="The controller's details every report names.", no_args_is_help=True
)
app.add_typer(controller_app, name="controller")


def _summary(report: dict[str, Any]) -> None:
    state = "[bold red]DRAFT[/]" if report["draft"] else "[green]ready to file[/]"
    say(f"Incident {report['incident']['id']}: {escape(report['incident']['title'])} — {state}")
    for reason in report["draft_reasons"]:
        say(f"  [red]•[/] {escape(reason)}")
    timing = report["timing"]
    facts = Table("", "", show_header=False)
    facts.add_row("became aware", cell(timing["awareness"]["at_text"]))
    window = timing["breach_window"]
    facts.add_row("breach window", cell(f"{window['from_text']} to {window['to_text']}"))
    facts.add_row("people affected", cell(report["people"]["count_text"]))
    for m in report["people"]["by_member_state"]:
        facts.add_row(f"  in {m['name']}", cell(m["people_text"]))
    sev = report["severity"]
    facts.add_row("severity (ENISA)", cell(f"{sev['level']}: {sev['formula']}"))
    facts.add_row("people told", cell(report["people_told"]["text"]))
    console.print(facts)
    table = Table("obligation", "recipient", "people", "due", "where it stands")
    for d in report["deadlines"]:
        table.add_row(
            cell(d["key"]),
            cell(d["recipient"]),
            cell(f"{d['people']:,}"),
            cell(d["due_text"]),
            cell(d["status_text"]),
        )
    console.print(table)


@app.command("show")
def show(ctx: typer.Context, incident_id: int) -> None:
    """The report in brief: draft or not, when, how many, severity, every deadline."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        report = regulator_report(session, settings, incident_id)
    _summary(report)


@app.command("export")
def export(
    ctx: typer.Context,
    incident_id: int,
    html: Annotated[Path | None, typer.Option(help="write the document as HTML")] = None,
    pdf: Annotated[Path | None, typer.Option(help="write the document as PDF")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the data as JSON")] = None,
) -> None:
    """Write the report (its proofs against a checkpoint signed now if need be)."""
    if html is None and pdf is None and json_out is None:
        fail("say where to write it: --html, --pdf and/or --json", code=2)
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        report = regulator_report(session, settings, incident_id, ledger=ledger)
    with friendly_errors():
        if html is not None:
            html.write_text(render_html(report), encoding="utf-8")
            say(f"[green]✓[/] HTML -> {escape(str(html))}")
        if pdf is not None:
            from mailveil.incidents.report_pdf import render_pdf  # Pango only when asked

            pdf.write_bytes(render_pdf(report))
            say(f"[green]✓[/] PDF -> {escape(str(pdf))}")
        if json_out is not None:
            json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            say(f"[green]✓[/] JSON -> {escape(str(json_out))}")
    if report["draft"]:
        say("[bold red]DRAFT[/]: " + escape("; ".join(report["draft_reasons"])))


@app.command("affected")
def affected(
    ctx: typer.Context,
    incident_id: int,
    out: Annotated[Path, typer.Option(help="where to write the list (NDJSON)")],
    with_leaves: Annotated[
        bool,
        typer.Option(
            "--with-leaves",
            help="include each entry's leaf (it names the person's revoked alias, never their "
            "address) so each claim can be checked",
        ),
    ] = False,
) -> None:
    """The exact list of affected people (ids, never addresses) with the inclusion proofs of
    the entries that put them in the blast radius."""
    settings = ctx.obj.settings()
    with (
        signed_unit(settings) as (session, ledger),
        out.open("w", encoding="utf-8") as handle,
        Progress(TextColumn("people"), BarColumn(), MofNCompleteColumn(), console=console) as bar,
    ):
        task = bar.add_task("people", total=None)
        summary = write_affected(
            session,
            settings,
            ledger,
            incident_id,
            handle,
            with_leaves=with_leaves,
            progress=lambda n: bar.update(task, completed=n),
        )
    say(
        f"[green]✓[/] {summary.people:,} people, {summary.entries:,} ledger entries proved "
        f"against the checkpoint of {summary.tree_size:,} entries -> {escape(str(out))}"
    )
    if summary.unproven:
        say(f"[yellow]![/] {summary.unproven:,} people have a route no ledger entry backs")


@app.command("verify-affected")
def verify_affected_command(
    file: Annotated[Path, typer.Argument(help="a list written by `affected`")],
    key: Annotated[str | None, typer.Option(help="the operator's published ledger key")] = None,
    witness: Annotated[list[str] | None, typer.Option(help="a witness key you trust")] = None,
    quorum: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Check a list from itself alone: checkpoint signature, every proof, the trailer."""
    try:
        with file.open(encoding="utf-8") as handle:
            result = verify_affected(
                handle, verifier_key=key, witnesses=witness or [], quorum=quorum
            )
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file}: cannot be read: {exc}", code=2)
    table = Table("check", "result", "detail")
    for what, passed, why in result.checks:
        table.add_row(cell(what), "[green]pass[/]" if passed else "[red]FAIL[/]", cell(why))
    console.print(table)
    for warning in result.warnings:
        say(escape(warning), err=True)
    if not result.ok:
        fail("the list does not verify")
    say("[green]✓[/] the list verifies")


@controller_app.command("show")
def controller_show(ctx: typer.Context) -> None:
    """The details in force, where they come from, and what is missing."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        details = controller_details(session, settings)
    table = Table("field", "value")
    missing = set(details.missing())
    for name in FIELDS:
        shown = details.values.get(name) or ""
        table.add_row(
            cell(LABELS[name]),
            cell(shown) if shown else ("[red]missing[/]" if name in missing else ""),
        )
    console.print(table)
    say(f"from {details.source}, version {details.version}")


@controller_app.command("set")
def controller_set(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="the controller's legal name")] = None,
    address: Annotated[str | None, typer.Option(help="postal address (\\n between lines)")] = None,
    establishment: Annotated[
        str | None, typer.Option(help="ISO country of the main establishment in the EEA")
    ] = None,
    dpo_name: Annotated[str | None, typer.Option()] = None,
    dpo_email: Annotated[str | None, typer.Option(help="the contact point's e-mail")] = None,
    dpo_phone: Annotated[str | None, typer.Option()] = None,
    representative_name: Annotated[str | None, typer.Option()] = None,
    representative_address: Annotated[str | None, typer.Option()] = None,
    representative_email: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Change some details ("" clears one); each change goes to the ledger."""
    given = {
        "name": name,
        "address": address.replace("\\n", "\n") if address else address,
        "establishment_country": establishment,
        "dpo_name": dpo_name,
        "dpo_email": dpo_email,
        "dpo_phone": dpo_phone,
        "representative_name": representative_name,
        "representative_address": representative_address.replace("\\n", "\n")
        if representative_address
        else representative_address,
        "representative_email": representative_email,
    }
    changes = {k: val for k, val in given.items() if val is not None}
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        details = set_controller(
            session, settings=settings, ledger=ledger, changes=changes, actor=operator_actor()
        )
    missing = ", ".join(LABELS[f] for f in details.missing()) or "nothing"
    say(f"[green]✓[/] controller details at version {details.version}; missing: {escape(missing)}")


def _severity_changes(values: dict[str, Any], reset: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: val for k, val in values.items() if val is not None}
    for name in reset:
        out[name] = None
    return out


@app.command("assess")
def assess(
    ctx: typer.Context,
    incident_id: int,
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
    dpc_category: Annotated[
        str | None, typer.Option(help=", ".join(CHOICES["dpc_category"]))
    ] = None,
    dpc_adjustment: Annotated[int | None, typer.Option(min=-3, max=3)] = None,
    ei: Annotated[str | None, typer.Option(help=", ".join(CHOICES["ei"]))] = None,
    confidentiality: Annotated[
        str | None, typer.Option(help=", ".join(CHOICES["confidentiality"]))
    ] = None,
    integrity: Annotated[str | None, typer.Option(help=", ".join(CHOICES["integrity"]))] = None,
    availability: Annotated[
        str | None, typer.Option(help=", ".join(CHOICES["availability"]))
    ] = None,
    malicious: Annotated[bool | None, typer.Option("--malicious/--not-malicious")] = None,
    reset: Annotated[
        list[str] | None, typer.Option(help="an ENISA input back to its suggestion")
    ] = None,
    breach_from: Annotated[str | None, typer.Option(help="ISO time the breach began")] = None,
    breach_to: Annotated[str | None, typer.Option(help="ISO time it ended")] = None,
    breach_basis: Annotated[str | None, typer.Option(help="how the window is known")] = None,
    measure: Annotated[
        list[str] | None, typer.Option(help="a measure proposed (repeat; replaces the list)")
    ] = None,
    consequence: Annotated[
        list[str] | None, typer.Option(help="a further likely consequence (repeat)")
    ] = None,
    nature: Annotated[str | None, typer.Option(help="the breach described in words")] = None,
) -> None:
    """Record the officer's inputs: ENISA inputs, breach window, measures, consequences."""
    severity = _severity_changes(
        {
            "dpc_category": dpc_category,
            "dpc_adjustment": dpc_adjustment,
            "ei": ei,
            "confidentiality": confidentiality,
            "integrity": integrity,
            "availability": availability,
            "malicious": malicious,
        },
        reset or [],
    )
    changes: dict[str, Any] = {"severity": severity} if severity else {}
    for key, val in (
        ("breach_from", breach_from),
        ("breach_to", breach_to),
        ("breach_basis", breach_basis),
        ("measures_proposed", measure),
        ("consequences", consequence),
        ("nature", nature),
    ):
        if val is not None:
            changes[key] = val
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        _values, version = filings.assess_incident(
            session,
            ledger=ledger,
            incident_id=incident_id,
            changes=changes,
            reason=reason,
            actor=operator_actor(),
        )
    say(f"[green]✓[/] assessment of incident {incident_id} at version {version}")


@app.command("submit")
def submit_command(
    ctx: typer.Context,
    incident_id: int,
    to: Annotated[str, typer.Option("--to", help="the obligation, e.g. EEA:authority")],
    kind: Annotated[str, typer.Option(help="initial, update or final")] = "initial",
    at: Annotated[str | None, typer.Option(help="when it was submitted (ISO; default now)")] = None,
    reference: Annotated[str, typer.Option(help="the recipient's case number")] = "",
    note: Annotated[str, typer.Option()] = "",
) -> None:
    """Record that the report went to a recipient (a phase of Art. 33(4))."""
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        row = submit(
            session,
            settings=settings,
            ledger=ledger,
            incident_id=incident_id,
            obligation=to,
            kind=kind,
            actor=operator_actor(),
            submitted_at=None if at is None else v.moment(at, "--at"),
            reference=reference,
            note=note,
        )
        view = filings.submission_view(row)
    changed = ", ".join(c["field"] for c in view["changes"]) or "first submission"
    say(
        f"[green]✓[/] {escape(to)}: phase {view['phase']} ({view['kind']}) recorded; "
        f"changed: {escape(changed)}"
    )


@app.command("decide")
def decide_command(
    ctx: typer.Context,
    incident_id: int,
    about: Annotated[str, typer.Option("--for", help="the obligation, e.g. EEA:individuals")],
    notify: Annotated[bool, typer.Option("--notify/--do-not-notify")],
    reason_code: Annotated[str, typer.Option(help=", ".join(filings.REASONS))],
    explain: Annotated[str, typer.Option(help="why, in words, for the ledger")],
) -> None:
    """Record a decision to notify a recipient, or not, with its reason."""
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        decide(
            session,
            settings=settings,
            ledger=ledger,
            incident_id=incident_id,
            obligation=about,
            notify=notify,
            reason_code=reason_code,
            explanation=explain,
            actor=operator_actor(),
        )
    say(f"[green]✓[/] {escape(about)}: {'notify' if notify else 'do not notify'} recorded")


@app.command("updates")
def updates(ctx: typer.Context, incident_id: int) -> None:
    """The submissions, phase by phase, and the decisions."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        subs = [filings.submission_view(s) for s in filings.submissions(session, incident_id)]
        decs = [filings.decision_view(d) for d in filings.decisions(session, incident_id)]
    table = Table("submitted", "to", "phase", "reference", "changed")
    for s in subs:
        changed = ", ".join(c["field"] for c in s["changes"]) or "-"
        table.add_row(
            cell(s["submitted_at"][:16]),
            cell(s["obligation"]),
            cell(f"{s['phase']} {s['kind']}"),
            cell(s["reference"]),
            cell(changed),
        )
    console.print(table)
    table = Table("decided", "about", "decision", "reason")
    for d in decs:
        table.add_row(
            cell(d["decided_at"][:16]),
            cell(d["obligation"]),
            cell("notify" if d["notify"] else "do not notify"),
            cell(f"{d['reason']}: {d['explanation']}"),
        )
    console.print(table)


__all__ = ["app"]
