"""`mailveil disclose` and `mailveil aliases show|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from mailveil.cli.common import console, database, fail, friendly_errors, operator_actor, say
from mailveil.contacts.aliases import alias_report, revoke_alias
from mailveil.contacts.disclosures import disclose_external
from mailveil.db.session import session_scope
from mailveil.ledger.append import Ledger
from mailveil.policy import PolicyEngine

aliases_app = typer.Typer(help="Aliases.", no_args_is_help=True)


def disclose_command(
    ctx: typer.Context,
    customer: Annotated[str, typer.Option(help="customer external id")],
    principal: Annotated[str, typer.Option(help="KIND:EXTERNAL_ID, e.g. seller:s-1001")],
    purpose: Annotated[str, typer.Option(help="order, support, notification, ...")],
    ref: Annotated[str | None, typer.Option(help="the order, case or template")] = None,
) -> None:
    """Disclose a customer's alias to a principal, if policy allows; both outcomes are logged."""
    kind, sep, ext = principal.partition(":")
    if not sep or not kind or not ext:
        fail("--principal must be KIND:EXTERNAL_ID, e.g. seller:s-1001", code=2)
    settings = ctx.obj.settings()
    with friendly_errors():
        policy = PolicyEngine.load(settings)
        ledger = Ledger.load(settings)
        with database(settings) as factory, session_scope(factory) as session:
            result = disclose_external(
                session,
                settings=settings,
                policy=policy,
                ledger=ledger,
                customer_external_id=customer,
                principal_kind=kind,
                principal_external_id=ext,
                purpose=purpose,
                ref=ref,
                actor=operator_actor(),
            )
    if result.allowed:
        say(f"alias         {result.alias}", markup=False)
        say(f"reverse alias {result.reverse_alias}", markup=False)
        say(f"ledger entry  {result.ledger_seq}", markup=False)
        return
    fail(f"denied: {result.reason} (ledger entry {result.ledger_seq})")


@aliases_app.command("show")
def show(ctx: typer.Context, address: str) -> None:
    """Who an alias was disclosed to, and its ledger history."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        report = alias_report(session, address)
    console.print_json(data=report.to_dict())


@aliases_app.command("revoke")
def revoke(
    ctx: typer.Context,
    address: str,
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
) -> None:
    """Revoke an alias; mail to it is refused from then on."""
    settings = ctx.obj.settings()
    with friendly_errors():
        ledger = Ledger.load(settings)
        with database(settings) as factory, session_scope(factory) as session:
            alias = revoke_alias(
                session,
                ledger=ledger,
                address=address,
                reason=reason,
                actor=operator_actor(),
            )
            revoked = alias.address
    say(f"[green]✓[/] revoked {escape(revoked)}")
