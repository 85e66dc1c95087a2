"""`mailveil customers import FILE.csv|FILE.ndjson`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mailveil.cli.common import cell, database, err_console, fail, friendly_errors, say
from mailveil.cli.progress import file_progress
from mailveil.contacts.customers import ImportOutcome, import_customers
from mailveil.contacts.importing import detect_format, iter_records
from mailveil.vault import Vault

app = typer.Typer(help="Customers.", no_args_is_help=True)
SHOWN_PROBLEMS = 50


@app.command("import")
def import_file(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a .csv (with header) or .ndjson file")],
    batch: Annotated[int, typer.Option(help="rows per committed batch", min=1)] = 500,
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
    problems: list[ImportOutcome] = []
    with friendly_errors():
        vault = Vault.open(settings)
        size = file.stat().st_size
        with (
            database(settings) as factory,
            file.open("rb") as stream,
            factory() as session,
            file_progress(file.name, stream, size) as advance,
        ):
            last_line = 0
            try:
                for outcome in import_customers(
                    session, vault, iter_records(stream, fmt), batch_size=batch
                ):
                    counts[outcome.status] += 1
                    last_line = outcome.line
                    # Kept for the table only (memory stays bounded on a big, bad file).
                    if outcome.status != "created" and len(problems) < SHOWN_PROBLEMS:
                        problems.append(outcome)
                    advance()
            except BaseException:
                # Interrupted (Ctrl-C, a database error): each outcome is reported only
                # after its batch was committed, so say what is already stored.
                say(
                    f"stopped after line {last_line}: {_summary(counts)} so far "
                    "(those rows are stored)",
                    err=True,
                )
                raise
    table = Table("line", "status", "external id", "reason", title="rows not imported")
    bad = counts["duplicate"] + counts["error"]
    for outcome in problems:
        table.add_row(
            cell(outcome.line),
            cell(outcome.status),
            cell(outcome.external_id),
            cell(outcome.reason),
        )
    if bad:
        err_console.print(table)
        if bad > len(problems):
            say(f"... and {bad - len(problems)} more", err=True)
    say(_summary(counts))
    if bad:
        raise typer.Exit(1)


def _summary(counts: dict[str, int]) -> str:
    return (
        f"created {counts['created']}, duplicates {counts['duplicate']}, errors {counts['error']}"
    )
