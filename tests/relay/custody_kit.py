"""Key custody under traffic: the relay on a committed database (SQLite file or a PostgreSQL
schema named in the URL, as an operator would configure it) and a client thread sending mail
through it the whole time, counting what was accepted and what was refused."""

from __future__ import annotations

import smtplib
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from relay_server_kit import SELLER_ADDRESS, Relay, message, open_relay, transaction
from sqlalchemy import Engine, text

from dbkit import PG_URL
from mailveil.config import Settings
from mailveil.custody.binding import bind_keys
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory, session_scope


@dataclass
class LiveDb:
    url: str
    engine: Engine
    backend: str


@contextmanager
def live_db(backend: str, tmp_path: Path, pg_ok: bool) -> Iterator[LiveDb]:
    """A migrated database reachable by URL alone (what `mailveil backup` is given)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'live.db'}"
        engine = make_engine(url=url)
        upgrade(engine)
        try:
            yield LiveDb(url, engine, backend)
        finally:
            engine.dispose()
        return
    if not pg_ok:
        pytest.skip("PostgreSQL not reachable")
    schema = f"mv_live_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url=PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = make_engine(url=url)
    upgrade(engine)
    try:
        yield LiveDb(url, engine, backend)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def new_pg_database() -> Iterator[str]:
    """An empty PostgreSQL database (a restore target); its name."""
    name = f"mv_restore_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url=PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.engine.dispose()


def pg_url_for(database: str, url: str) -> str:
    """``url`` (the live database's) pointed at another database, same search_path."""
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{database}" + (f"?{query}" if query else "")


@contextmanager
def running_relay(
    settings: Settings, db: LiveDb, tmp_path: Path, **overrides: object
) -> Iterator[Relay]:
    """The relay on the live database, its keys recorded as `mailveil init` records them."""
    factory = make_session_factory(db.engine)
    gen = open_relay(settings.with_overrides(database_url=db.url, **overrides), factory, tmp_path)
    relay = next(gen)
    with session_scope(factory) as session:
        bind_keys(session, relay.settings)
    try:
        yield relay
    finally:
        gen.close()


@dataclass
class Traffic:
    """A seller writing to a customer through the relay, message after message."""

    relay: Relay
    both_directions: bool = False  # also the customer writing back through her reverse alias
    accepted: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        w = self.relay.world
        alias, reverse, real = w.alias("alice", "acme"), w.reverse("alice", "acme"), w.real["alice"]
        to_customer = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Parcel")
        # The customer's reply is recognised by her address's blind index (RCPT and From).
        to_principal = message(from_=f"Alice <{real}>", to=reverse, subject="Re: Parcel")
        turn = 0
        while not self._stop.is_set():
            turn += 1
            both = self.both_directions and turn % 2 == 0
            try:
                with self.relay.client(token=None if both else w.keys["acme"]) as client:
                    for _ in range(10):
                        if self._stop.is_set():
                            break
                        if both:
                            code, reply = transaction(client, real, reverse, to_principal)
                        else:
                            code, reply = transaction(client, SELLER_ADDRESS, alias, to_customer)
                        if code == 250:
                            self.accepted += 1
                        else:
                            self.refused.append(f"{code} {reply}")
            except (smtplib.SMTPException, OSError) as exc:
                self.errors.append(repr(exc))

    def wait_for(self, accepted: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < accepted:
            assert not self.refused and not self.errors, (self.refused, self.errors)
            assert time.monotonic() < deadline, f"only {self.accepted} accepted"
            time.sleep(0.02)

    def stop(self) -> Traffic:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self


__all__ = ["LiveDb", "Traffic", "live_db", "new_pg_database", "pg_url_for", "running_relay"]
