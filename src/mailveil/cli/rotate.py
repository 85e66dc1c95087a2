"""`mailveil keys rotate-index|rotate-verp|rotate-dkim|rotate-ledger` (custody.rotation)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from mailveil.cli.common import database, fail, friendly_errors, say
from mailveil.cli.progress import rows_progress
from mailveil.custody.rotation import RotationError, rotate_index_key, rotate_verp_key
from mailveil.db.session import session_scope
from mailveil.vault import Vault


def rotate_index(
    ctx: typer.Context,
    wait: Annotated[
        float | None,
        typer.Option(
            help="seconds to let every process start indexing under both keys "
            "(default key_refresh_seconds)",
            min=0,
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="rows per committed batch", min=1)] = 1000,
) -> None:
    """New blind-index key; every address re-indexed online, lookups working throughout.
    Run it again to resume an interrupted rotation."""
    settings = ctx.obj.settings()
    with friendly_errors():
        vault = Vault.open(settings)
        with (
            database(settings) as factory,
            rows_progress("re-indexing addresses") as tick,
            session_scope(factory) as session,
        ):
            try:
                report = rotate_index_key(
                    session,
                    settings,
                    vault,
                    wait_seconds=wait,
                    batch_size=batch,
                    progress=tick,
                )
            except RotationError as exc:
                fail(str(exc))
    verb = "resumed" if report.resumed else "done"
    say(
        f"[green]✓[/] blind-index rotation {verb}: {report.reindexed} address(es) re-indexed; "
        f"the old key is archived as {escape(report.retired_file)} (older backups need it)"
    )


def rotate_verp(ctx: typer.Context) -> None:
    """New VERP key; bounces to addresses signed with the old one are still taken for
    verp_grace_days."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        retired = rotate_verp_key(session, settings)
    say(
        f"[green]✓[/] new VERP key; the old one ({escape(retired)}) is honoured for "
        f"{settings.verp_grace_days:g} day(s)"
    )


def dkim_rollover(
    ctx: typer.Context,
    ed25519_selector: Annotated[str, typer.Option(help="the new Ed25519 key's selector")],
    rsa_selector: Annotated[str, typer.Option(help="the new RSA key's selector")],
) -> None:
    """New DKIM keys under new selectors: publish their records now; the relay signs with
    them after dkim_overlap_hours, and the old records stay until `keys dkim-retire`."""
    from datetime import UTC, datetime

    from mailveil.custody.binding import bind_keys
    from mailveil.relay.dkim import DkimError, zone_line
    from mailveil.relay.dkim_rollover import load_signer, start_rollover

    settings = ctx.obj.settings()
    with friendly_errors():
        try:
            gen = start_rollover(settings, ed25519_selector, rsa_selector)
        except DkimError as exc:
            fail(str(exc))
        with database(settings) as factory, session_scope(factory) as session:
            bind_keys(session, settings)
        records = load_signer(settings, now=gen.signs_from).dns_records()
    when = datetime.fromtimestamp(gen.signs_from, UTC).isoformat(timespec="seconds")
    say(f"[green]✓[/] new DKIM selectors; the relay signs with them from {when}")
    say("DKIM records to publish now (keep the old ones until `mailveil keys dkim-retire`):")
    for name, value in records.items():
        if name.split(".", 1)[0] in (ed25519_selector, rsa_selector):
            say(f"  {zone_line(name, value)}", markup=False)


def dkim_retire(ctx: typer.Context) -> None:
    """Delete DKIM keys whose successor has signed for dkim_overlap_hours; lists the
    selectors whose DNS records to withdraw."""
    from mailveil.custody.binding import DKIM, retire_recorded
    from mailveil.relay.dkim_rollover import retire_rollover

    settings = ctx.obj.settings()
    with friendly_errors():
        gone = retire_rollover(settings)
        with database(settings) as factory, session_scope(factory) as session:
            for selector in gone:
                for name in (f"dkim-{selector}.ed25519.key", f"dkim-{selector}.rsa.pem"):
                    retire_recorded(session, DKIM, name)
    if not gone:
        say("nothing to retire: no older selector has been replaced for the overlap yet")
        return
    say(f"[green]✓[/] retired DKIM selectors {escape(', '.join(gone))}: withdraw their records")


def rotate_ledger(ctx: typer.Context) -> None:
    """New ledger signing key. The rotation is a ledger entry, signed (with the checkpoint
    covering it) by the old key and the new; old checkpoints keep verifying. Restart the
    API, relay and workers, and give witnesses the new verifier key."""
    from mailveil.cli.common import operator_actor
    from mailveil.custody.ledger_rotation import rotate_ledger_key
    from mailveil.ledger.signing import CheckpointSigner

    settings = ctx.obj.settings()
    with friendly_errors():
        old = CheckpointSigner.load(settings)
        with database(settings) as factory, session_scope(factory) as session:
            done = rotate_ledger_key(session, settings, old, actor=operator_actor())
    say(f"[green]✓[/] ledger key rotated; the change is entry {done.seq}", markup=True)
    say(f"new verifier key: {done.new_key}", markup=False)
    say(f"old verifier key (kept in {done.retired_file}): {done.old_key}", markup=False)
