"""What every command shares: settings from the global options, the database, error output."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings, SettingsError, load_settings
from mailveil.db.session import make_engine, make_session_factory, session_scope
from mailveil.errors import MailveilError
from mailveil.keyfiles import KeyFileError
from mailveil.ledger.append import Ledger

# Output carries ids, file names and reasons exactly as they are: no ":name:" emoji codes,
# no guessed highlighting (markup is escaped where values are interpolated).
console = Console(emoji=False, highlight=False)
err_console = Console(stderr=True, emoji=False, highlight=False)


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


def say(text: str, *, markup: bool = True, err: bool = False) -> None:
    """One message line. Never hard-wrapped at the terminal's width: a log or a pipe gets
    the line whole (a terminal wraps it for display anyway). Interpolated values must be
    ``escape``d when ``markup`` is on."""
    (err_console if err else console).print(text, markup=markup, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    # Messages carry ids, file names and policy reasons: text, never Rich markup.
    say(f"[bold red]error:[/] {escape(message)}", err=True)
    raise typer.Exit(code)


def emit(text: str) -> None:
    """Machine-readable output (tokens, signed notes), written verbatim: no wrapping at the
    terminal's width, no markup, no emoji codes. A wrapped signature line no longer verifies."""
    typer.echo(text, nl=not text.endswith("\n"))


def cell(value: object) -> Text:
    """A table cell shown as it is (an external id like "[red]" is not markup)."""
    return Text("" if value is None else str(value))


def operator_actor() -> str:
    """How the ledger names the person running the command."""
    try:
        name = getpass.getuser()
    except Exception:  # no login name: a container running under an arbitrary uid
        name = f"uid-{os.getuid()}"
    return f"operator:{name}"


def open_engine(settings: Settings) -> Engine:
    """``make_engine``, with an unusable ``database_url`` reported as a setting error."""
    try:
        return make_engine(settings)
    except ArgumentError as exc:  # not a URL, or an unknown dialect (never echoes the URL)
        fail(f"database_url: {exc}", code=2)
    except ImportError as exc:
        fail(f"database_url: its database driver is not installed ({exc.name or exc})", code=2)
    except ValueError as exc:  # e.g. a port that is not a number
        fail(f"database_url: {exc}", code=2)


@contextmanager
def db_engine(settings: Settings) -> Iterator[Engine]:
    """The configured database, closed when the command is done."""
    if not settings.database_url:
        # The embedded SQLite file: connecting would create an empty one (and the data
        # directory, with default permissions) where only `mailveil init` should.
        db_file = settings.data_dir / "mailveil.db"
        if not db_file.is_file():
            fail(f"no database at {db_file}: run `mailveil init` first")
    engine = open_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database; the engine is closed when the command is done."""
    with db_engine(settings) as engine:
        yield make_session_factory(engine)


@contextmanager
def signed_unit(settings: Settings) -> Iterator[tuple[Session, Ledger]]:
    """What a command that writes to the ledger needs: clear errors, the ``Ledger`` (with its
    checkpoint signer) and one unit of work on the database (committed on success)."""
    with friendly_errors():
        ledger = Ledger.load(settings)
        with database(settings) as factory, session_scope(factory) as session:
            yield session, ledger


def _database_problem(exc: SQLAlchemyError, init_hint: bool) -> str:
    # Only the first line: SQLAlchemy's own text goes on with the SQL and its parameters.
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    lines = str(orig if orig is not None else exc).strip().splitlines()
    message = f"database error: {lines[0] if lines else type(exc).__name__}"
    missing_table = "no such table" in message or (  # SQLite, PostgreSQL
        "relation" in message and "does not exist" in message
    )
    if init_hint and missing_table and isinstance(exc, OperationalError | ProgrammingError):
        message += " (the schema is missing: run `mailveil init` first)"
    return message


@contextmanager
def friendly_errors(*, init_hint: bool = True) -> Iterator[None]:
    """Domain errors become one clear line and a non-zero exit, never a traceback.

    ``init_hint``: suggest `mailveil init` when the database looks unprepared."""
    try:
        yield
    except MailveilError as exc:
        fail(f"{exc.detail} ({exc.code})")
    except KeyFileError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(_database_problem(exc, init_hint))
    except OSError as exc:
        fail(str(exc))
