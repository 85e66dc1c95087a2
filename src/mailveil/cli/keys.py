"""`mailveil keys rotate|retire|status` and `mailveil api-keys create|list|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailveil.auth.keys import Role, issue_key, list_keys, revoke_key
from mailveil.cli.common import cell, console, database, emit, friendly_errors, say
from mailveil.cli.progress import rows_progress
from mailveil.contacts.principals import get_principal
from mailveil.custody.binding import bind_keys
from mailveil.db.session import session_scope
from mailveil.vault import Vault, key_status, retire_keys, rotate_keys

app = typer.Typer(help="Address encryption keys.", no_args_is_help=True)
api_keys_app = typer.Typer(help="API keys for principals and operators.", no_args_is_help=True)


@app.command()
def rotate(
    ctx: typer.Context,
    reencrypt: Annotated[
        bool, typer.Option(help="also re-encrypt every address under the new data key")
    ] = False,
    batch: Annotated[int, typer.Option(help="rows per committed batch", min=1)] = 1000,
) -> None:
    """New key-encryption key; every data key re-wrapped under it (no downtime)."""
    settings = ctx.obj.settings()
    with friendly_errors():
        vault = Vault.open(settings)
        with (
            database(settings) as factory,
            rows_progress("re-encrypting addresses") as tick,
        ):
            with session_scope(factory) as session:
                report = rotate_keys(
                    session,
                    vault,
                    reencrypt=reencrypt,
                    batch_size=batch,
                    progress=tick if reencrypt else None,
                )
            with session_scope(factory) as session:
                bind_keys(session, settings)  # the new key-encryption key is recorded now
    say(
        f"[green]✓[/] new key-encryption key {report.new_kek_id}; "
        f"{report.rewrapped_deks} data key(s) re-wrapped; new data key "
        f"{report.new_dek_id}"
    )
    if reencrypt:
        say(f"[green]✓[/] {report.reencrypted_rows} address(es) re-encrypted")
    if report.unreferenced_keks:
        say(
            "Key-encryption keys no longer referenced (remove with `mailveil keys "
            f"retire`): {', '.join(report.unreferenced_keks)}",
            markup=False,
        )


@app.command()
def retire(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(help="only say what would go")] = False,
) -> None:
    """Delete data keys and key files that nothing references any more."""
    settings = ctx.obj.settings()
    with friendly_errors():
        vault = Vault.open(settings)
        with database(settings) as factory, session_scope(factory) as session:
            report = retire_keys(session, vault, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    deks = ", ".join(report.deleted_deks) or "none"
    keks = ", ".join(report.deleted_keks) or "none"
    say(f"{verb} data keys: {deks}", markup=False)
    say(f"{verb} key files: {keks}", markup=False)


@app.command()
def status(ctx: typer.Context) -> None:
    """Which keys exist and how many addresses each data key protects."""
    settings = ctx.obj.settings()
    with friendly_errors():
        vault = Vault.open(settings)
        with database(settings) as factory, session_scope(factory) as session:
            info = key_status(session, vault)
    console.print_json(data=info)


@api_keys_app.command("create")
def create_api_key(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option(help="admin, backend, seller, employee, investigator")],
    principal_id: Annotated[
        int | None, typer.Option(help="the seller or employee this key acts as")
    ] = None,
    label: Annotated[str, typer.Option(help="a note for people")] = "",
) -> None:
    """Issue an API key; the token is printed once."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        kind = get_principal(session, principal_id).kind if principal_id is not None else None
        issued = issue_key(
            session, role, principal_id=principal_id, principal_kind=kind, label=label
        )
        token = issued.token
    emit(token)


@api_keys_app.command("list")
def list_api_keys(ctx: typer.Context) -> None:
    """Every API key (never the secret)."""
    settings = ctx.obj.settings()
    table = Table("key id", "role", "principal", "label", "created", "revoked")
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        for row in list_keys(session):
            table.add_row(
                cell(row.key_id),
                cell(row.role),
                cell(row.principal_id),
                cell(row.label),
                cell(row.created_at.isoformat(timespec="seconds")),
                cell(row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else ""),
            )
    console.print(table)


@api_keys_app.command("revoke")
def revoke_api_key(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key by its key id."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        revoke_key(session, key_id)
    say(f"[green]✓[/] revoked {escape(key_id)}")
