"""`mailveil events push`: deliver message events to the marketplace's webhook
(``events_url``), signed, from the ledger, retried with backoff (``platform.events``)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from mailveil.cli.common import db_engine, fail, friendly_errors, say
from mailveil.db.session import make_session_factory, session_scope
from mailveil.platform.events import push_once, webhook_client

app = typer.Typer(help="Message events for the marketplace's backend.", no_args_is_help=True)


@app.command("push")
def push(
    ctx: typer.Context,
    every: Annotated[
        float, typer.Option(help="keep pushing, this many seconds apart (0: one pass)")
    ] = 0.0,
) -> None:
    """Send the events the webhook has not taken yet, batch by batch."""
    settings = ctx.obj.settings()
    if not settings.events_url:
        fail("events_url is not set: there is no webhook to push to")
    with friendly_errors(), db_engine(settings) as engine, webhook_client(settings) as client:
        factory = make_session_factory(engine)
        while True:
            sent = 0
            while True:
                with session_scope(factory) as session:
                    result = push_once(session, settings, client)
                sent += result.sent
                if result.error or result.waiting or result.sent == 0:
                    break
            if result.error:
                say(f"pushed {sent} event(s); the receiver failed: {escape(result.error)}")
            else:
                say(f"pushed {sent} event(s); cursor {result.cursor}")
            if every <= 0:
                if result.error:
                    raise typer.Exit(1)
                return
            time.sleep(every)
