"""`mailveil ledger verify|checkpoint|proof`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mailveil.cli.common import console, fail, friendly_errors
from mailveil.db.session import make_engine, make_session_factory, session_scope
from mailveil.ledger import proofs
from mailveil.ledger.append import checkpoint_now, ledger_size
from mailveil.ledger.signing import CheckpointSigner
from mailveil.ledger.verify import verify_ledger

app = typer.Typer(help="The tamper-evident ledger.", no_args_is_help=True)


@app.command()
def verify(ctx: typer.Context,
           batch: Annotated[int, typer.Option(help="rows read per batch")] = 10_000) -> None:
    """Re-check the hash chain, the Merkle tree and every checkpoint signature."""
    settings = ctx.obj.settings()
    with friendly_errors():
        signer = CheckpointSigner.load(settings)
        engine = make_engine(settings)
        with session_scope(make_session_factory(engine)) as session:
            total = ledger_size(session)
        with Progress(TextColumn("verifying ledger"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("verify", total=total)
            report = verify_ledger(engine, settings, signer.public_key,
                                   progress=lambda done: progress.update(task, completed=done),
                                   batch=batch)
        engine.dispose()
    if report.ok:
        console.print(f"[green]ledger verifies[/]: {report.entries} entries, "
                      f"{report.checkpoints} signed checkpoints")
        return
    fail(f"ledger does NOT verify: first bad entry seq {report.first_bad_seq}: {report.reason}")


@app.command()
def checkpoint(ctx: typer.Context) -> None:
    """Sign a checkpoint of the ledger as it is now and print it."""
    settings = ctx.obj.settings()
    with friendly_errors():
        signer = CheckpointSigner.load(settings)
        with session_scope(make_session_factory(make_engine(settings))) as session:
            cp = checkpoint_now(session, settings, signer)
    if cp is None:
        fail("the ledger is empty: nothing to checkpoint")
    console.print(cp.note, highlight=False, end="")


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
    with friendly_errors(), session_scope(make_session_factory(make_engine(settings))) as session:
        if index is not None:
            result = proofs.inclusion_proof(session, index, size)
        else:
            assert first is not None
            result = proofs.consistency_proof(session, first, size)
    console.print_json(json.dumps(result))
