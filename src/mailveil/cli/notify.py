"""`mailveil facts|templates|sends`: guarded notifications from the command line.

The commands call the same functions as the API (``mailveil.notify``); ``sends start`` runs
the send in this process (the worker of ``notify.queue.run_to_end``) until it is over.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from mailveil.cli.common import (
    cell,
    console,
    database,
    db_engine,
    err_console,
    fail,
    friendly_errors,
    operator_actor,
    say,
)
from mailveil.cli.progress import file_progress
from mailveil.config import Settings
from mailveil.contacts.models import Principal
from mailveil.db.session import make_session_factory
from mailveil.errors import InvalidInput
from mailveil.ledger.append import Ledger
from mailveil.notify import lint as lint_mod
from mailveil.notify.audience import Entry, parse_audience, query_entries
from mailveil.notify.facts import FactResult, ingest_lines
from mailveil.notify.models import CATEGORIES, OPEN_SEND_STATUSES
from mailveil.notify.queue import run_to_end
from mailveil.notify.rules import parse_rule
from mailveil.notify.sends import (
    check_startable,
    correction,
    create_send,
    get_send,
    kill,
    preview,
    send_view,
)
from mailveil.notify.templates import (
    DEFAULT_REASONS,
    get_template,
    language_of,
    lint_template,
    list_templates,
    parse_translations,
    register_template,
)
from mailveil.runtime import Runtime

facts_app = typer.Typer(
    help="Facts: the only evidence a notification can use.", no_args_is_help=True
)
templates_app = typer.Typer(
    help="Notification templates (versioned, linted).", no_args_is_help=True
)
sends_app = typer.Typer(help="Guarded, staged notification sends.", no_args_is_help=True)
SHOWN_PROBLEMS = 50
FINAL_OK = "completed"


# -- facts ------------------------------------------------------------------------------------


@facts_app.command("import")
def facts_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="an .ndjson file, one fact per line")],
    batch: Annotated[int, typer.Option(help="facts per committed batch", min=1)] = 2000,
) -> None:
    """Stream facts in: good lines are stored, bad ones reported with their line numbers.

    Exits 1 if any line was bad."""
    settings = ctx.obj.settings()
    if not file.is_file():
        fail(f"{file}: no such file", code=2)
    counts = {"created": 0, "unchanged": 0, "error": 0}
    problems: list[FactResult] = []
    with friendly_errors():
        size = file.stat().st_size
        with (
            database(settings) as factory,
            file.open("rb") as stream,
            factory() as session,
            file_progress(file.name, stream, size) as advance,
        ):
            try:
                for result in ingest_lines(session, stream, batch_size=batch):
                    counts[result.status] += 1
                    if result.status == "error" and len(problems) < SHOWN_PROBLEMS:
                        problems.append(result)
                    advance()
            except BaseException:
                # Results come after their batch's commit: what was counted is stored.
                say(f"stopped: {_fact_summary(counts)} so far (those are stored)", err=True)
                raise
    if counts["error"]:
        table = Table("line", "id", "error", "detail", title="facts not imported")
        for r in problems:
            table.add_row(cell(r.line), cell(r.fact_id), cell(r.error), cell(r.detail))
        err_console.print(table)
        if counts["error"] > len(problems):
            say(f"... and {counts['error'] - len(problems)} more", err=True)
    say(_fact_summary(counts))
    if counts["error"]:
        raise typer.Exit(1)


def _fact_summary(counts: dict[str, int]) -> str:
    return f"created {counts['created']}, unchanged {counts['unchanged']}, errors {counts['error']}"


# -- templates --------------------------------------------------------------------------------


def read_template_file(file: Path) -> dict[str, Any]:
    """A template from a .toml or .json file (the API's fields)."""
    if not file.is_file():
        fail(f"{file}: no such file", code=2)
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(file.read_text(encoding="utf-8"))
        elif suffix == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
        else:
            fail(f"{file}: a template file must end in .toml or .json", code=2)
    except (tomllib.TOMLDecodeError, ValueError, UnicodeDecodeError) as exc:
        fail(f"{file}: not valid {suffix[1:].upper()}: {exc}", code=2)
    if not isinstance(data, dict):
        fail(f"{file}: a template must be an object", code=2)
    return data


def _findings_table(findings: list[dict[str, Any]], title: str) -> Table:
    table = Table("level", "code", "message", title=title)
    for f in findings:
        table.add_row(cell(f["level"]), cell(f["code"]), cell(f["message"]))
    return table


@templates_app.command("add")
def templates_add(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a .toml or .json template")],
) -> None:
    """Register a new version of the template the file names; lint runs now.

    Exits 1 when the version has lint errors (it is stored, but cannot be sent)."""
    settings = ctx.obj.settings()
    data = read_template_file(file)
    with friendly_errors(), database(settings) as factory, factory() as session:
        row = register_template(session, settings, data, actor=operator_actor())
        session.commit()
        name, version, findings = row.name, row.version, list(row.findings)
    say(f"[green]✓[/] registered {escape(name)} version {version}")
    if findings:
        console.print(_findings_table(findings, f"lint of {name} v{version}"))
    if lint_mod.blocking(findings):
        say("it has lint errors: it cannot be sent until a fixed version is added", err=True)
        raise typer.Exit(1)
    if lint_mod.warnings(findings):
        say("its warnings need a named person's acknowledgement before it can be sent")


@templates_app.command("list")
def templates_list(ctx: typer.Context) -> None:
    """The latest version of every template."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, factory() as session:
        rows = []
        for t in list_templates(session):
            owner = session.get(Principal, t.owner_id)
            errors = len(lint_mod.blocking(t.findings))
            warns = len(lint_mod.warnings(t.findings))
            sendable = not errors and (not warns or bool(t.acknowledged_by))
            rows.append(
                (t.name, t.version, t.category, owner.external_id if owner else None,
                 errors, warns, "yes" if sendable else "no")
            )  # fmt: skip
    if not rows:
        say("no templates")
        return
    table = Table("name", "version", "category", "owner", "errors", "warnings", "sendable")
    for r in rows:
        table.add_row(*(cell(x) for x in r))
    console.print(table)


@templates_app.command("lint")
def templates_lint(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a .toml or .json template")],
) -> None:
    """Lint a template file without registering it. Exits 1 on errors."""
    settings = ctx.obj.settings()
    data = read_template_file(file)
    with friendly_errors():
        findings = lint_file(settings, data)
    if not findings:
        say("[green]✓[/] no findings")
        return
    console.print(_findings_table(findings, f"lint of {file.name}"))
    if lint_mod.blocking(findings):
        raise typer.Exit(1)


def lint_file(settings: Settings, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings registration would store (no database needed)."""
    subject, body = data.get("subject"), data.get("body")
    if not isinstance(subject, str) or not isinstance(body, str):
        raise InvalidInput("a template needs a subject and a body (text)")
    category = data.get("category")
    if category not in CATEGORIES:
        raise InvalidInput(f"category must be one of {', '.join(CATEGORIES)}")
    words = data.get("words") or []
    sensitivity = data.get("sensitivity") or []
    if not isinstance(words, list) or not isinstance(sensitivity, list):
        raise InvalidInput("words and sensitivity must be lists")
    rule = data.get("rule")
    reason = str(data.get("reason") or DEFAULT_REASONS[category]).replace("-", "_")
    language = language_of(data.get("language") or "en", "language")
    return lint_template(
        settings, subject=subject, body=body, category=category,
        sensitivity=[str(s) for s in sensitivity],
        rule=parse_rule(rule) if rule not in (None, {}) else None,
        suppression=data.get("suppression_list") or None, reviewer=data.get("reviewer") or None,
        words=[str(w) for w in words], reason=reason, language=language,
        translations=parse_translations(data.get("translations"), language),
    )  # fmt: skip


# -- sends ------------------------------------------------------------------------------------


def read_audience(session: Session, settings: Settings, file: Path) -> Iterator[Entry]:
    """The audience file: ``{"customers": [...]}`` or ``{"query": {...}}`` (as the API)."""
    if not file.is_file():
        fail(f"{file}: no such file", code=2)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"{file}: not valid JSON: {exc}", code=2)
    audience = parse_audience(raw)
    if isinstance(audience, list):
        return iter(audience)
    return SegmentEntries(query_entries(session, audience, settings.notify_batch_size))


class SegmentEntries(Iterator[Entry]):
    """A segment's entries (the preview says its audience is a segment, not a list)."""

    def __init__(self, inner: Iterator[Entry]) -> None:
        self.inner = inner

    def __next__(self) -> Entry:
        return next(self.inner)


TemplateOpt = Annotated[str, typer.Option("--template", help="template name")]
VersionOpt = Annotated[int | None, typer.Option("--version", help="template version (latest)")]
AudienceOpt = Annotated[
    Path, typer.Option("--audience", help='JSON: {"customers": [...]} or {"query": {...}}')
]
SendId = Annotated[int, typer.Argument(help="the send's id")]


@sends_app.command("preview")
def sends_preview(
    ctx: typer.Context, template: TemplateOpt, audience: AudienceOpt, version: VersionOpt = None
) -> None:
    """A dry run: counts, reasons, the stage plan and the blast-radius verdict. Nothing is
    stored or sent."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, factory() as session:
        row = get_template(session, template, version)
        entries = read_audience(session, settings, audience)
        source = "segment" if isinstance(entries, SegmentEntries) else "list"
        result = preview(session, settings, row, entries, source=source)
    _print_preview(result)


def _print_preview(p: dict[str, Any]) -> None:
    t = p["template"]
    counts = Table("", "recipients", title=f"preview of {t['name']} v{t['version']}")
    counts.add_row("audience", cell(p["audience"]))
    counts.add_row("audience source", cell(p.get("audience_source", "list")))
    for state, n in p["counts"].items():
        counts.add_row(cell(state), cell(n))
    counts.add_row("ineligible rate", cell(f"{p['ineligible_rate']:.2%}"))
    console.print(counts)
    if p["reasons"]:
        reasons = Table("reason", "recipients", title="not sent, and why")
        for why, n in p["reasons"].items():
            reasons.add_row(cell(why), cell(n))
        console.print(reasons)
    plan = Table("stage", "cumulative recipients", title="stage plan")
    for i, n in enumerate(p["stages"], start=1):
        plan.add_row(cell(i), cell(n))
    console.print(plan)
    verdict = Table("check", "verdict", title="blast radius")
    verdict.add_row("expected volume", cell(p["expected_volume"]))
    ratio = p["audience_vs_expected"]
    verdict.add_row("eligible / expected", cell(f"{ratio:.2f}" if ratio is not None else "-"))
    needs = p["needs_second_approver"]
    verdict.add_row(
        "second approver", cell(f"required: {p['approval_reason']}" if needs else "not required")
    )
    verdict.add_row(
        "first stage", cell("would halt" if p["would_halt_at_first_stage"] else "would pass")
    )
    console.print(verdict)


@sends_app.command("create")
def sends_create(
    ctx: typer.Context, template: TemplateOpt, audience: AudienceOpt, version: VersionOpt = None
) -> None:
    """Create a send (recipients assessed and stored); start it with `sends start ID`."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, factory() as session:
        row = get_template(session, template, version)
        # Streamed: a segment is read a page at a time as create_send stores each batch.
        entries = read_audience(session, settings, audience)
        send = create_send(
            session,
            settings,
            Ledger.load(settings),
            template=row,
            entries=entries,
            actor=operator_actor(),
        )
        session.commit()
        view = send_view(session, send)
    _print_send(view)
    say(f"send {view['id']} created ({view['status']})")


def _print_send(view: dict[str, Any]) -> None:
    console.print(_send_table(view))


def _send_table(view: dict[str, Any]) -> Table:
    t = view["template"]
    table = Table("field", "value", title=f"send {view['id']}")
    table.add_row("template", cell(f"{t['name']} v{t['version']}"))
    table.add_row("status", cell(view["status"]))
    table.add_row("stage", cell(view["stage_label"]))
    table.add_row("audience", cell(view["audience"]))
    table.add_row("eligible", cell(view["eligible"]))
    for state, n in sorted(view["recipients"].items()):
        table.add_row(f"recipients {state}", cell(n))
    if view["corrects"] is not None:
        table.add_row("corrects", cell(view["corrects"]))
    if view["approval_reason"]:
        table.add_row("approval", cell(view["approval_reason"]))
    if view["halt_reason"]:
        table.add_row("halted", cell(view["halt_reason"]))
    return table


@sends_app.command("status")
def sends_status(ctx: typer.Context, send_id: SendId) -> None:
    """Where a send is: status, stage and its recipients by state."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, factory() as session:
        view = send_view(session, get_send(session, send_id))
    _print_send(view)


@sends_app.command("kill")
def sends_kill(ctx: typer.Context, send_id: SendId) -> None:
    """The kill switch: a running worker stops before its next group of recipients."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, factory() as session:
        send = kill(session, Ledger.load(settings), send_id,
                    actor=operator_actor())  # fmt: skip
        session.commit()
        view = send_view(session, send)
    _print_send(view)
    say(f"send {send_id} killed")


@sends_app.command("correct")
def sends_correct(
    ctx: typer.Context,
    send_id: SendId,
    template: TemplateOpt,
    version: VersionOpt = None,
    include_unconfirmed: Annotated[
        bool,
        typer.Option(
            "--include-unconfirmed",
            help="also the recipients whose delivery was never confirmed after a crash",
        ),
    ] = False,
) -> None:
    """A send of TEMPLATE to exactly the customers the ledger says received SEND_ID (and,
    with --include-unconfirmed, those the original left unconfirmed: your decision)."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, factory() as session:
        send = correction(
            session,
            settings,
            Ledger.load(settings),
            original_id=send_id,
            template_name=template,
            version=version,
            actor=operator_actor(),
            include_unconfirmed=include_unconfirmed,
        )
        session.commit()
        view = send_view(session, send)
    _print_send(view)
    say(f"correction send {view['id']} created ({view['status']}); start it with `sends start`")


@sends_app.command("start")
def sends_start(ctx: typer.Context, send_id: SendId) -> None:
    """Run the send in this process until it is over (completed, halted or killed), with a
    live status. Exits 1 unless it completed. Ctrl-C stops this worker (the send stays
    running; start it again to resume)."""
    settings = ctx.obj.settings()
    with friendly_errors(), db_engine(settings) as engine:
        factory = make_session_factory(engine)
        with factory() as session:
            check_startable(session, send_id)
        runtime = Runtime.open(settings, engine=engine, session_factory=factory)
        stop = threading.Event()
        worker = threading.Thread(
            target=run_to_end,
            args=(runtime, send_id),
            kwargs={"stop": stop},
            name=f"notify-send-{send_id}",
            daemon=True,
        )
        worker.start()
        try:
            view = _watch(factory, send_id, worker)
        finally:
            stop.set()
            worker.join(30)
    if view["status"] == FINAL_OK:
        say(f"[green]✓[/] send {send_id} completed")
        return
    if view["status"] in OPEN_SEND_STATUSES:
        fail(f"send {send_id} is still {view['status']}: the worker stopped early")
    fail(f"send {send_id} {view['status']}: {view['halt_reason'] or ''}".strip())


def _watch(factory: Any, send_id: int, worker: threading.Thread) -> dict[str, Any]:
    """Show the send's status until the worker is done; the final view."""

    def current() -> dict[str, Any]:
        with factory() as session:
            return send_view(session, get_send(session, send_id))

    view = current()
    if console.is_terminal:
        with Live(_send_table(view), console=console, refresh_per_second=4) as live:
            while worker.is_alive():
                time.sleep(0.25)
                view = current()
                live.update(_send_table(view))
        return current()
    # Not a terminal (a log, a pipe): one line per change.
    shown = ""
    while True:
        alive = worker.is_alive()
        view = current()
        line = _status_line(view)
        if line != shown:
            say(line, markup=False)
            shown = line
        if not alive:
            break
        time.sleep(0.25)
    _print_send(view)
    return view


def _status_line(view: dict[str, Any]) -> str:
    parts = ", ".join(f"{k} {n}" for k, n in sorted(view["recipients"].items()))
    return f"send {view['id']}: {view['status']}, stage {view['stage_label']} ({parts})"


__all__ = ["facts_app", "lint_file", "read_template_file", "sends_app", "templates_app"]
