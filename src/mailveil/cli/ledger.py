"""`mailveil ledger verify|checkpoint|proof`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mailveil.cli.common import (
    console,
    database,
    db_engine,
    emit,
    err_console,
    fail,
    friendly_errors,
    say,
)
from mailveil.db.session import make_session_factory, session_scope
from mailveil.ledger import proofs
from mailveil.ledger.append import checkpoint_now, ledger_size
from mailveil.ledger.signing import CheckpointSigner
from mailveil.ledger.verify import VerifyReport, verify_ledger

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
                    signer.public_key,
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
def checkpoint(ctx: typer.Context) -> None:
    """Sign a checkpoint of the ledger as it is now and print it."""
    settings = ctx.obj.settings()
    with friendly_errors():
        signer = CheckpointSigner.load(settings)
        with database(settings) as factory, session_scope(factory) as session:
            cp = checkpoint_now(session, settings, signer)
    if cp is None:
        fail("the ledger is empty: nothing to checkpoint")
    emit(cp.note)


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
