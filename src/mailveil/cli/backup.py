"""`mailveil backup` and `mailveil restore` (custody.backup does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mailveil.cli.common import fail, friendly_errors, say
from mailveil.custody.backup import BackupError, restore, take_backup
from mailveil.custody.keyfile_export import MIN_PASSPHRASE, KeyExportError

PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        help="read the key export's passphrase from this file (first line); else it is asked",
        exists=True,
        dir_okay=False,
    ),
]


def _passphrase(path: Path | None, *, confirm: bool) -> str:
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    text: str = typer.prompt(
        f"passphrase for the key export (at least {MIN_PASSPHRASE} characters)",
        hide_input=True,
        confirmation_prompt=confirm,
        err=True,
    )
    return text


def backup_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="directory for the database snapshot")],
    keys_out: Annotated[
        Path, typer.Option(help="file for the wrapped keys; never in the snapshot's directory")
    ],
    passphrase_file: PassphraseFile = None,
) -> None:
    """Snapshot the database while the service runs; export the keys apart, wrapped."""
    settings = ctx.obj.settings()
    with friendly_errors():
        try:
            report = take_backup(
                settings, out, keys_out, _passphrase(passphrase_file, confirm=True)
            )
        except (BackupError, KeyExportError) as exc:
            fail(str(exc))
    say(
        f"[green]✓[/] {report.backend} snapshot {escape(str(report.data_file))} "
        f"({report.data_bytes} bytes, manifest {escape(report.manifest_file.name)})"
    )
    say(
        f"[green]✓[/] {report.keys} key file(s) wrapped into {escape(str(report.keys_file))}: "
        "store it apart from the snapshot, and the passphrase apart from both"
    )


def restore_command(
    ctx: typer.Context,
    keys: Annotated[Path, typer.Option(help="the wrapped key export", exists=True)],
    data: Annotated[
        Path | None, typer.Option(help="the snapshot (.sqlite or .pgdump)", exists=True)
    ] = None,
    keys_only: Annotated[
        bool, typer.Option(help="bring back only the keys, for the configured database")
    ] = False,
    passphrase_file: PassphraseFile = None,
) -> None:
    """Restore keys and data into an empty target, check they belong together, verify the
    ledger (exit 1 if anything does not)."""
    settings = ctx.obj.settings()
    if (data is None) != keys_only:
        fail("give --data SNAPSHOT, or --keys-only to restore the keys alone", code=2)
    with friendly_errors():
        try:
            report = restore(settings, keys, _passphrase(passphrase_file, confirm=False), data)
        except (BackupError, KeyExportError) as exc:
            fail(str(exc))
    if report.data_restored:
        say(f"[green]✓[/] database restored from {escape(str(data))}")
    say(
        f"[green]✓[/] keys match the data; {len(report.keys_installed)} key file(s) "
        f"installed in {escape(str(settings.keys_dir))}"
    )
    ledger = report.ledger
    if ledger is not None and ledger.ok:
        say(
            f"[green]ledger verifies[/]: {ledger.entries} entries, "
            f"{ledger.checkpoints} signed checkpoints"
        )
    elif ledger is not None:
        fail(f"ledger does NOT verify after the restore: {ledger.reason}")
