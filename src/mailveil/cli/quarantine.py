"""`mailveil quarantine list|show|release|delete`: messages the relay held instead of
delivering (strangers at aliases, mail to canaries), named by their SHA-256."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from mailveil.cli.common import cell, console, db_engine, fail, friendly_errors, operator_actor, say
from mailveil.db.session import make_session_factory, session_scope
from mailveil.ledger.append import Ledger
from mailveil.relay import quarantine
from mailveil.relay.context import RelayContext
from mailveil.relay.delivery import DeliveryError
from mailveil.relay.release import delete, held_entry, list_held, release
from mailveil.runtime import Runtime

app = typer.Typer(help="Messages the relay held (strangers, canaries).", no_args_is_help=True)

Sha = Annotated[
    str,
    typer.Argument(
        help="the message's SHA-256 from `quarantine list`, or a unique prefix (8+ hex digits)"
    ),
]


@app.command("list")
def list_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (every field)")] = False,
) -> None:
    """Held messages, oldest first, with the ledger entry that holds each."""
    settings = ctx.obj.settings()
    with (
        friendly_errors(),
        db_engine(settings) as engine,
        session_scope(make_session_factory(engine)) as session,
    ):
        rows = [e.view() for e in list_held(session, settings)]
    if as_json:
        console.print_json(data=rows)
        return
    if not rows:
        say("the quarantine is empty")
        return
    table = Table("size", "held at", "kind", "entry", "alias", "sender")
    # The whole name, never cut: `show`, `release` and `delete` take it (or a prefix).
    table.columns.insert(0, Column("sha256", no_wrap=True, min_width=64))
    for r in rows:
        table.add_row(
            cell(r["sha256"]),
            cell(r["size"]),
            cell(r["held_at"]),
            cell(r["kind"]),
            cell(r["entry"]),
            cell(r["alias"]),
            cell(r["envelope_from"] or r["header_from"]),
        )
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    sha256: Sha,
    raw: Annotated[bool, typer.Option("--raw", help="write the message's bytes instead")] = False,
) -> None:
    """What the ledger says about one held message (JSON), or the message itself."""
    settings = ctx.obj.settings()
    with friendly_errors():
        sha256 = quarantine.resolve(settings.data_dir, sha256)
        if raw:
            data = quarantine.read(settings.data_dir, sha256)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        with db_engine(settings) as engine, session_scope(make_session_factory(engine)) as s:
            view = held_entry(s, settings, sha256).view()
    console.print_json(data=view)


@app.command("release")
def release_command(ctx: typer.Context, sha256: Sha) -> None:
    """Deliver a stranger's held message to the customer with the warning banner (as
    relay_stranger_action = "banner" would), ledgered; the file goes once delivered."""
    settings = ctx.obj.settings()
    with friendly_errors():
        sha256 = quarantine.resolve(settings.data_dir, sha256)
    with friendly_errors(), db_engine(settings) as engine:
        runtime = Runtime.open(settings, engine=engine)
        relay = RelayContext.load(runtime)
        with runtime.session_factory() as session:
            try:
                token = release(session, relay, sha256, actor=operator_actor())
            except DeliveryError as exc:
                fail(
                    f"the smarthost did not take it ({exc.reply.code} {exc.reply.enhanced}: "
                    f"{exc.reply.text.split(' ', 1)[1]}); it stays in quarantine"
                )
    say(f"[green]✓[/] released {escape(sha256)} (relay message {escape(token)})")


@app.command("delete")
def delete_command(
    ctx: typer.Context,
    sha256: Sha,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Delete a held message (ledgered). A canary's message is evidence: export the
    incident first."""
    settings = ctx.obj.settings()
    with friendly_errors():
        sha256 = quarantine.resolve(settings.data_dir, sha256)
    if not yes and not typer.confirm(f"Delete held message {sha256}?"):
        raise typer.Exit(1)
    with friendly_errors(), db_engine(settings) as engine:
        ledger = Ledger.load(settings)
        with make_session_factory(engine)() as session:
            delete(session, settings, ledger, sha256, actor=operator_actor())
    say(f"[green]✓[/] deleted {escape(sha256)}")


__all__ = ["app"]
