"""`mailveil customers import FILE.csv|FILE.ndjson`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailveil.cli.common import console, err_console, fail, friendly_errors
from mailveil.contacts.customers import import_customers
from mailveil.contacts.importing import detect_format, iter_records
from mailveil.db.session import make_engine, make_session_factory
from mailveil.vault import Vault

app = typer.Typer(help="Customers.", no_args_is_help=True)
SHOWN_PROBLEMS = 50


@app.command("import")
def import_file(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a .csv (with header) or .ndjson file")],
    batch: Annotated[int, typer.Option(help="rows per committed batch")] = 500,
) -> None:
    """Stream customers in: good rows are kept, bad rows reported with line numbers.

    Exits 1 if any row was bad or a duplicate."""
    settings = ctx.obj.settings()
    try:
        fmt = detect_format(file.name)
    except ValueError as exc:
        fail(str(exc), code=2)
    if not file.is_file():
        fail(f"{file}: no such file", code=2)
    counts = {"created": 0, "duplicate": 0, "error": 0}
    problems = []
    with friendly_errors():
        vault = Vault.open(settings)
        factory = make_session_factory(make_engine(settings))
        size = file.stat().st_size
        with file.open("rb") as stream, factory() as session, Progress(
            TextColumn("importing {task.fields[name]}"), BarColumn(), DownloadColumn(),
            TimeRemainingColumn(), console=err_console,
        ) as progress:
            task = progress.add_task("import", total=size, name=file.name)
            for outcome in import_customers(session, vault, iter_records(stream, fmt),
                                            batch_size=batch):
                counts[outcome.status] += 1
                if outcome.status != "created":
                    problems.append(outcome)
                progress.update(task, completed=stream.tell())
    table = Table("line", "status", "external id", "reason", title="rows not imported")
    for outcome in problems[:SHOWN_PROBLEMS]:
        table.add_row(str(outcome.line), outcome.status, outcome.external_id or "",
                      outcome.reason or "")
    if problems:
        err_console.print(table)
        if len(problems) > SHOWN_PROBLEMS:
            err_console.print(f"... and {len(problems) - SHOWN_PROBLEMS} more")
    console.print(f"created {counts['created']}, duplicates {counts['duplicate']}, "
                  f"errors {counts['error']}")
    if problems:
        raise typer.Exit(1)
