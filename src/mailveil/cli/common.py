"""What every command shares: settings from the global options, the runtime, error output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from mailveil.config import Settings, SettingsError, load_settings
from mailveil.errors import MailveilError
from mailveil.keyfiles import KeyFileError

console = Console()
err_console = Console(stderr=True)


@dataclass
class CliState:
    config: Path | None = None
    data_dir: Path | None = None
    database_url: str | None = None

    def settings(self) -> Settings:
        overrides: dict[str, Any] = {}
        if self.data_dir is not None:
            overrides["data_dir"] = self.data_dir
        if self.database_url is not None:
            overrides["database_url"] = self.database_url
        try:
            return load_settings(config_file=self.config, **overrides)
        except SettingsError as exc:
            fail(str(exc), code=2)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Domain errors become one clear line and a non-zero exit, never a traceback."""
    try:
        yield
    except MailveilError as exc:
        fail(f"{exc.detail} ({exc.code})")
    except KeyFileError as exc:
        fail(str(exc))
