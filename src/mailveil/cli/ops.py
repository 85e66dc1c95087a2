"""`mailveil doctor` and `mailveil alerts list|pump|retry`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mailveil.cli.common import cell, console, database, emit, friendly_errors, say
from mailveil.db.session import session_scope

alerts_app = typer.Typer(
    help="Alert webhooks (incident opened, send halted, canary hit, witness disagreement).",
    no_args_is_help=True,
)

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print the verdicts as JSON")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="skip the smarthost and DNS checks")
    ] = False,
) -> None:
    """Check settings, keys, database, ports, smarthost and published DNS records; one
    verdict per item. Exits 1 when any item failed."""
    from mailveil import doctor

    settings = ctx.obj.settings()
    if offline:
        items = [
            *doctor.check_settings(settings),
            *doctor.check_keys(settings),
            *doctor.check_database(settings),
            *doctor.check_ports(settings),
        ]
    else:
        items = doctor.run_checks(settings)  # DNS through dns_nameservers, or the system's
    failed = sum(1 for i in items if i.verdict == doctor.FAIL)
    if as_json:
        emit(json.dumps([i.to_dict() for i in items], indent=2))
    else:
        table = Table("area", "item", "verdict", "detail")
        for i in items:
            table.add_row(
                cell(i.area), cell(i.name), Text(i.verdict, style=_STYLE[i.verdict]), cell(i.detail)
            )
        console.print(table)
        warned = sum(1 for i in items if i.verdict == doctor.WARN)
        say(f"{len(items)} checks: {failed} failed, {warned} warnings", markup=False)
    if failed:
        raise typer.Exit(1)


@alerts_app.command("list")
def list_command(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="only this state: pending, delivered or failed")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Alerts in the outbox, newest first."""
    from mailveil.ops.alerts import list_alerts

    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as s:
        rows = [
            {
                "id": a.id, "alert": a.kind, "state": a.state, "attempts": a.attempts,
                "ledger_seq": a.ledger_seq, "created_at": a.created_at.isoformat(),
                "last_error": a.last_error,
            }
            for a in list_alerts(s, state=state)
        ]  # fmt: skip
    if as_json:
        emit(json.dumps(rows, indent=2))
        return
    table = Table("id", "alert", "state", "attempts", "ledger entry", "raised", "last error")
    for r in rows:
        table.add_row(*(cell(r[k]) for k in r))
    console.print(table)


@alerts_app.command("pump")
def pump_command(ctx: typer.Context) -> None:
    """Raise alerts for new ledger entries and post what is due now (what `serve` does every
    alert_poll_seconds)."""
    from mailveil.ops.alerts import pump

    settings = ctx.obj.settings()
    if not settings.alert_webhook_url:
        say("alert_webhook_url is not set: no alerts to send", markup=False)
        return
    with friendly_errors(), database(settings) as factory:
        result = pump(factory, settings)
    say(
        f"{result.enqueued} new, {result.delivered} delivered, {result.retrying} to retry, "
        f"{result.failed} given up",
        markup=False,
    )


@alerts_app.command("retry")
def retry_command(ctx: typer.Context) -> None:
    """Queue the alerts that were given up again (after the receiver is fixed)."""
    from mailveil.ops.alerts import retry_failed

    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as s:
        n = retry_failed(s)
    say(f"{n} alert(s) queued again", markup=False)
