"""Running `mailveil` in-process (Typer's CliRunner) on a private data directory, and the
set-up the CLI tests share: principals, orders and disclosures made through the contacts
functions on the same database the command uses."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

import world_kit as world
from mailveil.cli import common
from mailveil.cli.app import app
from mailveil.config import Settings, load_settings
from mailveil.contacts.customers import customer_address, get_customer_by_external_id
from mailveil.contacts.disclosures import DisclosureResult
from mailveil.contacts.models import Customer
from mailveil.db.base import utcnow
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TOKEN = re.compile(r"\bmvk_[a-z0-9]{12}_[A-Za-z0-9_-]{20,}")


def tokens(text: str) -> list[str]:
    """The API tokens printed in ``text``."""
    return [str(t) for t in TOKEN.findall(text)]


# Wide enough that no table cell used in these tests wraps; tests of narrow terminals set
# COLUMNS themselves.
WIDE = "200"


def clean_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """The environment for one run: no MAILVEIL_* setting of the developer's leaks in."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MAILVEIL_")}
    env.update({"COLUMNS": WIDE, "LINES": "50", "NO_COLOR": "1"})
    # Nothing may make Rich treat the captured output as a terminal (colours, live bars).
    env.update({"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None})
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Run:
    """One command's outcome, ANSI escapes removed."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def flat(self) -> str:
        """Everything printed, box drawing removed and whitespace collapsed (for phrases a
        narrow table cell or line may have wrapped)."""
        text = re.sub(r"[\u2500-\u257f]", " ", self.output)
        return " ".join(text.split())

    def __str__(self) -> str:
        return (
            f"mailveil {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a Rich table (box style), continuation lines merged into their row."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if rows and cells[0] == "":
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return rows


@contextmanager
def console_size(width: int, height: int) -> Iterator[None]:
    """The CLI's consoles at this size for one run. Rich reads COLUMNS when a console is
    built (at import, when the variable is set then, e.g. under xdist) and keeps it; the
    size setter is the public way to change it, and the saved values restore it."""
    consoles = (common.console, common.err_console)
    saved = [(c._width, c._height) for c in consoles]
    try:
        for c in consoles:
            c.size = (width, height)
        yield
    finally:
        for c, (w, h) in zip(consoles, saved, strict=True):
            c._width, c._height = w, h


@dataclass
class Cli:
    """`mailveil --data-dir <data_dir> [--database-url URL] ...` in this process."""

    data_dir: Path
    database_url: str | None = None
    env: dict[str, str | None] = field(default_factory=dict)

    def global_options(self) -> list[str]:
        opts = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            opts += ["--database-url", self.database_url]
        return opts

    def __call__(self, *args: str, env: Mapping[str, str | None] | None = None) -> Run:
        return self.raw([*self.global_options(), *args], env=env)

    def raw(self, argv: Sequence[str], env: Mapping[str, str | None] | None = None) -> Run:
        """Any argument list (no global options added)."""
        full_env = clean_env({**self.env, **(env or {})})
        with console_size(int(full_env["COLUMNS"] or WIDE), int(full_env["LINES"] or 50)):
            result = CliRunner().invoke(app, list(argv), env=full_env, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            # A command must never end in a traceback: that is a failure of the test.
            raise AssertionError(
                f"mailveil {' '.join(argv)} raised {result.exception!r}\n{result.output}"
            ) from result.exception
        return Run(
            tuple(argv),
            result.exit_code,
            ANSI.sub("", result.stdout),
            ANSI.sub("", result.stderr),
        )

    def ok(self, *args: str, env: Mapping[str, str | None] | None = None) -> Run:
        run = self(*args, env=env)
        assert run.code == 0, str(run)
        return run

    def settings(self) -> Settings:
        if self.database_url:
            return load_settings(env={}, data_dir=self.data_dir, database_url=self.database_url)
        return load_settings(env={}, data_dir=self.data_dir)


@contextmanager
def open_db(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the database the CLI uses (a separate engine, closed afterwards)."""
    engine = make_engine(url=settings.db_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


# -- set-up through the contacts functions ----------------------------------------------------


def add_seller(db: sessionmaker[Session], external_id: str, name: str = "Acme Books") -> int:
    with db.begin() as session:
        return world.seller(session, external_id=external_id, display_name=name).id


def add_employee(db: sessionmaker[Session], external_id: str, name: str = "Pat Support") -> int:
    with db.begin() as session:
        # No attributes: these employees are people the CLI shows, not policy subjects.
        return world.employee(
            session, external_id=external_id, display_name=name, attributes=None
        ).id


def customer_id(db: sessionmaker[Session], external_id: str) -> int:
    with db() as session:
        return get_customer_by_external_id(session, external_id).id


def add_order(
    db: sessionmaker[Session], external_id: str, customer_ext: str, seller_id: int
) -> int:
    cid = customer_id(db, customer_ext)
    with db.begin() as session:
        return world.order(session, cid, seller_id, ext=external_id, placed_at=utcnow()).id


def disclose_to(
    db: sessionmaker[Session],
    settings: Settings,
    customer_ext: str,
    principal_id: int,
    purpose: str = "order",
    ref: str | None = None,
) -> DisclosureResult:
    """A disclosure through the contacts function (as the API would make it), committed."""
    cid = customer_id(db, customer_ext)
    parts = (settings, PolicyEngine.load(settings), Ledger.load(settings))
    with db.begin() as session:
        return world.disclosure(
            session, parts, cid, principal_id, purpose=purpose, ref=ref, actor="test:setup"
        )


def addresses_by_external_id(settings: Settings) -> dict[str, str]:
    """Every stored customer's address, decrypted by a freshly opened vault."""
    vault = Vault.open(settings)
    with open_db(settings) as db, db() as session:
        return {
            c.external_id: customer_address(session, vault, c)
            for c in session.scalars(select(Customer).order_by(Customer.id))
        }


def count_customers(settings: Settings) -> int:
    with open_db(settings) as db, db() as session:
        return int(session.scalar(select(func.count()).select_from(Customer)) or 0)


def ledger_entries(settings: Settings) -> list[LedgerEntry]:
    with open_db(settings) as db, db() as session:
        return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))


def assert_no_address(run: Run, addresses: Sequence[str]) -> None:
    """None of the real addresses (nor their local part with its '@') appears anywhere."""
    text = run.output.lower()
    for address in addresses:
        assert address.lower() not in text, f"{address!r} printed by {run}"
        local = address.lower().split("@", 1)[0] + "@"
        assert local not in text, f"local part of {address!r} printed by {run}"


def record_stranger(
    db: sessionmaker[Session], settings: Settings, alias: str, cid: int, owner: int
) -> None:
    """What the relay records of a stranger's mail to ``alias`` (relay.identity), its
    sender proving its own domain and nothing more."""
    detail = {
        "principal": f"principal:{owner}",
        "envelope_from": "deals@spam.example",
        "header_from": "deals@spam.example",
        "spf": "pass",
        "spf_domain": "spam.example",
        "spf_aligned": True,
        "dkim": [],
        "from_domain": "spam.example",
        "action": "quarantine",
    }
    event = Event("stranger_at_alias", None, f"customer:{cid}", alias, "to_customer", None, detail)
    with db.begin() as s:
        Ledger.load(settings).append(s, [event])


def forwarded_report(alias: str) -> bytes:
    """A customer forwarding, as an attachment, spam that a stranger sent to ``alias``."""
    spam = EmailMessage()
    spam["From"] = "deals@spam.example"
    spam["To"] = alias
    spam["Subject"] = "prize"
    spam.set_content("click")
    report = EmailMessage()
    report["From"] = "olga.buyer@example.com"
    report["Subject"] = "Fwd: prize"
    report.set_content("spam!")
    report.add_attachment(spam)
    return report.as_bytes()
