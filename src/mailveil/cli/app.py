"""Top-level commands (init, serve) and the sub-command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mailveil.cli import access, customers, detect, disclosures, keys, ledger, policy, quarantine
from mailveil.cli import backup as backup_cli
from mailveil.cli import events as events_cli
from mailveil.cli import incident_report as report_cli
from mailveil.cli import notify as notify_cli
from mailveil.cli import ops as ops_cli
from mailveil.cli import rotate as rotate_cli
from mailveil.cli import serve as serve_cli
from mailveil.cli import witness as witness_cli
from mailveil.cli import worker as worker_cli
from mailveil.cli.common import CliState, emit, fail, friendly_errors, say
from mailveil.cli.setup import initialise

app = typer.Typer(
    name="mailveil",
    help="mailveil: the customer-contact firewall for online marketplaces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(customers.app, name="customers")
app.add_typer(disclosures.aliases_app, name="aliases")
app.add_typer(ledger.app, name="ledger")
app.add_typer(keys.app, name="keys")
app.add_typer(keys.api_keys_app, name="api-keys")
app.add_typer(policy.app, name="policy")
app.command("disclose")(disclosures.disclose_command)
app.add_typer(access.principals_app, name="principals")
app.add_typer(access.reveals_app, name="reveals")
app.add_typer(detect.detect_app, name="detect")
app.add_typer(detect.incidents_app, name="incidents")
detect.incidents_app.add_typer(report_cli.app, name="report")
app.add_typer(detect.canaries_app, name="canaries")
app.add_typer(detect.reports_app, name="reports")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(notify_cli.facts_app, name="facts")
app.add_typer(notify_cli.templates_app, name="templates")
app.add_typer(notify_cli.sends_app, name="sends")
app.add_typer(witness_cli.app, name="witness")
app.add_typer(events_cli.app, name="events")
app.command("backup")(backup_cli.backup_command)
app.command("restore")(backup_cli.restore_command)
keys.app.command("rotate-index")(rotate_cli.rotate_index)
keys.app.command("rotate-verp")(rotate_cli.rotate_verp)
keys.app.command("dkim-rollover")(rotate_cli.dkim_rollover)
keys.app.command("dkim-retire")(rotate_cli.dkim_retire)
keys.app.command("rotate-ledger")(rotate_cli.rotate_ledger)
app.add_typer(ops_cli.alerts_app, name="alerts")
app.command("doctor")(ops_cli.doctor_command)
app.command("worker")(worker_cli.worker_command)
customers.app.command("access-log")(access.access_log_command)
customers.app.command("contact")(access.contact_command)
customers.app.command("export")(access.export_command)


def command() -> Any:
    """The click command `mailveil` runs: Typer's, with the type column of flags left empty
    (Typer prints ``<bool>`` beside every flag, ``--help`` included, which reads as if the
    flag took a value)."""
    built = typer.main.get_command(app)
    _quiet_flags(built)
    return built


def _quiet_flags(cmd: Any) -> None:
    for param in cmd.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    help_option = cmd.get_help_option(type(cmd).context_class(cmd))
    if help_option is not None:
        help_option.metavar = ""
    for sub in getattr(cmd, "commands", {}).values():
        _quiet_flags(sub)


@app.callback()
def options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML settings file")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data directory (default ./var)")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL")] = None,
) -> None:
    ctx.obj = CliState(config=config, data_dir=data_dir, database_url=database_url)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the data directory, keys and schema (idempotent); print the first admin key once."""
    settings = ctx.obj.settings()
    with friendly_errors(init_hint=False):
        result = initialise(settings)
    for line in result.steps:
        say(f"[green]✓[/] {escape(line)}")
    if result.admin_token:
        say("\n[bold]Bootstrap admin API key (shown once, store it now):[/]")
        emit(result.admin_token)
    else:
        say(
            "An admin key already exists; it is never shown again. "
            "Issue another with `mailveil api-keys create --role admin`."
        )


app.command("serve")(serve_cli.serve_command)


@app.command("relay")
def relay_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="SMTP address")] = None,
    port: Annotated[int | None, typer.Option(help="SMTP port", min=1, max=65535)] = None,
    workers: Annotated[
        int | None, typer.Option(help="relay processes (default relay_workers)", min=1)
    ] = None,
) -> None:
    """Run the SMTP relay alone (127.0.0.1:2525 by default); with --workers N, N processes on
    its port under a supervisor that restarts one that dies and stops them all on SIGTERM or
    Ctrl-C."""
    import asyncio

    from mailveil.logs import configure_logging
    from mailveil.relay.server import RelayServer, serve_until_signalled
    from mailveil.relay.workers import listen, serve_workers
    from mailveil.runtime import Runtime

    settings = ctx.obj.settings()
    host = host if host is not None else settings.relay_host
    port = port if port is not None else settings.relay_port
    workers = workers if workers is not None else settings.relay_workers
    with friendly_errors(init_hint=False):
        initialise(settings, issue_admin=False)
        configure_logging(settings)
        runtime = Runtime.open(settings)
        server = RelayServer.from_runtime(runtime, host=host, port=port)  # checks keys, policy
        if workers > 1:
            runtime.engine.dispose()  # each worker opens its own after fork
            sock = listen(host, port)
    serving = f"mailveil relay on {host}:{port} (SMTP, {workers} process(es))"
    if workers > 1:
        if settings.metrics_port:
            say("metrics_port is ignored with relay_workers > 1 (one registry per process)")
        # Announced once every process serves, as `mailveil serve` does.
        with friendly_errors(init_hint=False):  # a refused fork, in words
            code, failed = serve_workers(
                settings, sock, workers, lambda: say(serving, markup=False)
            )
        if code and failed:
            fail(failed)
        raise typer.Exit(code)
    say(serving, markup=False)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        with friendly_errors(init_hint=False):
            start_http_server(
                settings.metrics_port, addr=settings.metrics_host, registry=runtime.metrics.registry
            )
        say(f"metrics on http://{settings.metrics_host}:{settings.metrics_port}/", markup=False)
    with friendly_errors(init_hint=False):
        asyncio.run(serve_until_signalled(server))


@app.command()
def demo(
    out: Annotated[
        Path,
        typer.Option(help="where the demo writes what it leaves to open (the regulator report)"),
    ] = Path("mailveil-demo"),
    customers: Annotated[int, typer.Option(min=50, max=20_000)] = 400,
) -> None:
    """Replay both incidents end to end on the embedded defaults, in one process, with an
    in-process mail sink; prints each step. Uses a temporary data directory; what is worth
    opening afterwards goes to --out (./mailveil-demo by default)."""
    from rich.console import Console

    from mailveil.demo.story import run_demo

    folder = out.resolve()
    say(f"The demo's files go to {folder}", markup=False)
    report = run_demo(Console(), customers=customers, out_dir=folder)
    files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if files:
        say(f"Open them in {folder}: {', '.join(files)}", markup=False)
    if not report.ok:
        raise typer.Exit(1)
