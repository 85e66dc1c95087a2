"""`mailveil ledger verify|checkpoint|proof|key|verify-checkpoint|publish|witnesses|alerts`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailveil.cli.common import (
    cell,
    console,
    database,
    db_engine,
    emit,
    err_console,
    fail,
    friendly_errors,
    say,
)
from mailveil.config import Settings
from mailveil.custody.ledger_rotation import ledger_keys
from mailveil.db.session import make_session_factory, session_scope
from mailveil.ledger import proofs
from mailveil.ledger.append import Ledger, latest_checkpoint, ledger_size
from mailveil.ledger.notes import ALG_ED25519, verifier_key
from mailveil.ledger.signing import CheckpointSigner
from mailveil.ledger.verify import VerifyReport, verify_ledger
from mailveil.witness.alerts import list_alerts
from mailveil.witness.policy import check_checkpoint
from mailveil.witness.publish import PublishReport, publish_latest
from mailveil.witness.queries import (
    checkpoint_view,
    configured,
    witness_statuses,
    witnessed_checkpoint,
)

app = typer.Typer(help="The tamper-evident ledger.", no_args_is_help=True)


@app.command()
def verify(
    ctx: typer.Context,
    batch: Annotated[int, typer.Option(help="rows read per batch", min=1)] = 10_000,
) -> None:
    """Re-check the hash chain, the Merkle tree and every checkpoint signature."""
    settings = ctx.obj.settings()
    with friendly_errors():
        signer = CheckpointSigner.load(settings)
        with db_engine(settings) as engine:
            with session_scope(make_session_factory(engine)) as session:
                total = ledger_size(session)
            with Progress(
                TextColumn("verifying ledger"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err_console,
                disable=not err_console.is_terminal,
            ) as progress:
                task = progress.add_task("verify", total=total)
                report = verify_ledger(
                    engine,
                    settings,
                    ledger_keys(settings, signer.public_key),
                    progress=lambda done: progress.update(task, completed=done),
                    batch=batch,
                )
    if report.ok:
        say(
            f"[green]ledger verifies[/]: {report.entries} entries, "
            f"{report.checkpoints} signed checkpoints"
        )
        return
    fail(f"ledger does NOT verify: {_where(report)}: {report.reason}")


def _where(report: VerifyReport) -> str:
    if report.first_bad_seq is not None:
        return f"first bad entry seq {report.first_bad_seq}"
    if report.bad_checkpoint is not None:
        return f"first bad checkpoint at tree size {report.bad_checkpoint}"
    return "the ledger's head or schema"


@app.command()
def checkpoint(
    ctx: typer.Context,
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="submit it to the witnesses")
    ] = True,
) -> None:
    """Sign a checkpoint of the ledger as it is now, submit it to the configured witnesses,
    and print it with the cosignatures it has."""
    settings = ctx.obj.settings()
    with friendly_errors():
        ledger = Ledger.load(settings)
        with database(settings) as factory:
            with session_scope(factory) as session:
                cp = ledger.checkpoint_now(session)
            if cp is None:
                fail("the ledger is empty: nothing to checkpoint")
            if publish and configured(settings):
                show_publication(publish_latest(factory, settings, ledger, sign_new=False))
            with session_scope(factory) as session:
                view = checkpoint_view(session, settings, cp)
    emit(view["cosigned_note"])


def publish_for_evidence(settings: Settings) -> None:
    """Before exporting evidence: sign and publish a checkpoint, so the bundle can be proved
    against one the witnesses cosigned. A no-op without witnesses."""
    if not configured(settings):
        return
    with friendly_errors():
        ledger = Ledger.load(settings)
        with database(settings) as factory:
            show_publication(publish_latest(factory, settings, ledger))


def show_publication(report: PublishReport) -> None:
    """One line per witness on stderr (stdout stays machine-readable)."""
    for o in report.outcomes:
        colour = "green" if o.result in ("cosigned", "already") else "red"
        say(
            f"[{colour}]{o.result}[/] witness {escape(o.witness)}, size {o.tree_size}"
            + (f": {escape(o.detail)}" if o.detail and o.result != "already" else ""),
            err=True,
        )
        if o.alert is not None:
            say(f"[bold red]ALERT[/] {escape(o.alert.summary)}", err=True)


@app.command()
def publish(ctx: typer.Context) -> None:
    """Submit the newest checkpoint (signed now if entries arrived since) to every configured
    witness. Exits 1 unless the quorum cosigned it: run it from a scheduler."""
    settings = ctx.obj.settings()
    if not configured(settings):
        fail("no witnesses are configured (the `witnesses` setting)", code=2)
    with friendly_errors():
        ledger = Ledger.load(settings)
        with database(settings) as factory:
            report = publish_latest(factory, settings, ledger)
    if report.checkpoint is None:
        fail("the ledger is empty: nothing to publish")
    show_publication(report)
    if report.cosigned < settings.witness_quorum:
        fail(
            f"checkpoint {report.checkpoint.tree_size} has {report.cosigned} cosignature(s); "
            f"the quorum is {settings.witness_quorum}"
        )
    say(f"[green]✓[/] checkpoint {report.checkpoint.tree_size} is witnessed")


@app.command()
def key(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="every published form, as JSON")] = False,
) -> None:
    """Print the ledger's verifier key (C2SP signed-note form), which verifiers pin."""
    settings = ctx.obj.settings()
    with friendly_errors():
        signer = CheckpointSigner.load(settings)
    vkey = verifier_key(signer.key_name, signer.public_key, ALG_ED25519)
    if not as_json:
        emit(vkey.vkey)
        return
    console.print_json(json.dumps(vkey.document()))


@app.command("verify-checkpoint")
def verify_checkpoint_command(
    file: Annotated[Path, typer.Argument(help="a signed (and cosigned) checkpoint note")],
    key: Annotated[str, typer.Option(help="the ledger's verifier key, or its base64 public key")],
    witness: Annotated[
        list[str] | None, typer.Option(help="a witness's verifier key; repeat for each")
    ] = None,
    quorum: Annotated[
        int | None, typer.Option(min=1, help="cosignatures needed (default: every --witness)")
    ] = None,
) -> None:
    """Check a checkpoint without the database: the ledger's signature and a quorum of
    witness cosignatures."""
    try:
        note = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file}: cannot be read: {exc}", code=2)
    check = check_checkpoint(note, key, witness or [], quorum)
    for line in check.notes:
        say(escape(line), err=True)
    if not check.ok or check.checkpoint is None:
        fail(f"the checkpoint does NOT verify: {'; '.join(check.problems)}")
    cosigners = ", ".join(c.name for c in check.cosigners) or "no witness"
    say(
        f"[green]✓[/] checkpoint of {escape(check.checkpoint.origin)} at size "
        f"{check.checkpoint.size} verifies; cosigned by {escape(cosigners)}"
    )


@app.command()
def witnesses(ctx: typer.Context) -> None:
    """The configured witnesses: how far each cosigned, and its last error."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        rows = witness_statuses(session, settings)
        latest = latest_checkpoint(session)
        witnessed = witnessed_checkpoint(session, settings)
    table = Table("witness", "cosigned size", "last success", "failures", "last error")
    for r in rows:
        table.add_row(
            cell(r["witness"]),
            cell(r["cosigned_size"]),
            cell((r["last_success_at"] or "never")[:19]),
            cell(r["failures"]),
            cell(r["last_error"] or ""),
        )
    console.print(table)
    say(
        f"newest checkpoint: {latest.tree_size if latest else 'none'}; newest witnessed "
        f"(quorum {settings.witness_quorum}): {witnessed.tree_size if witnessed else 'none'}"
    )


@app.command()
def alerts(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """Witness alerts recorded in the ledger, newest first."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        rows = list_alerts(session, limit)
    table = Table("seq", "time", "witness", "reason", "ledger size", "witness size", "detail")
    for r in rows:
        table.add_row(
            cell(r["seq"]),
            cell(r["time"][:19]),
            cell(r["witness"]),
            cell(r["reason"]),
            cell(r["ledger_size"]),
            cell(r["witness_size"]),
            cell(r["detail"]),
        )
    console.print(table)


@app.command()
def proof(
    ctx: typer.Context,
    index: Annotated[int | None, typer.Option(help="inclusion proof for this leaf")] = None,
    first: Annotated[int | None, typer.Option(help="consistency proof from this size")] = None,
    size: Annotated[int | None, typer.Option(help="tree size (default: latest)")] = None,
) -> None:
    """Print an inclusion (--index) or consistency (--first) proof as JSON."""
    if (index is None) == (first is None):
        fail("give exactly one of --index or --first", code=2)
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        if index is not None:
            result = proofs.inclusion_proof(session, index, size)
        else:
            assert first is not None
            result = proofs.consistency_proof(session, first, size)
    console.print_json(json.dumps(result))
