"""`mailveil init`: data directory, keys and schema and the bootstrap admin key, idempotently.

The schema comes first: the keys are checked against what the database recorded before any
key is minted, so pointing an existing database at a new data directory is refused instead of
forking the keys (``custody.binding``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailveil.auth.keys import Role, issue_key
from mailveil.auth.models import ApiKey
from mailveil.cli.common import open_engine
from mailveil.config import Settings
from mailveil.custody.binding import BindReport, bind_keys
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_session_factory, session_scope
from mailveil.ledger.signing import init_signing_key
from mailveil.relay.dkim import DkimSigner, init_dkim_keys, zone_line
from mailveil.relay.messages import init_verp_key
from mailveil.vault import init_keys


@dataclass
class InitResult:
    steps: list[str] = field(default_factory=list)
    admin_token: str | None = None


def _mint(settings: Settings) -> None:
    init_keys(settings)
    init_signing_key(settings)
    init_dkim_keys(settings)
    init_verp_key(settings)


def initialise(settings: Settings, *, issue_admin: bool = True) -> InitResult:
    result = InitResult()
    # Only the service's user reads the data: keys, the database (encrypted addresses) and logs.
    for folder in (settings.data_dir, settings.keys_dir, settings.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    result.steps.append(f"data directory {settings.data_dir}")
    engine = open_engine(settings)
    try:
        upgrade(engine)
        result.steps.append("database schema at the latest migration")
        db_file = settings.data_dir / "mailveil.db"
        if settings.db_url == f"sqlite:///{db_file.as_posix()}" and db_file.exists():
            os.chmod(db_file, 0o600)
        factory = make_session_factory(engine)
        bound: BindReport | None = None
        for attempt in range(2):
            try:
                with session_scope(factory) as session:
                    bound = bind_keys(session, settings, mint=lambda: _mint(settings))
                break
            except IntegrityError:
                # Another process recorded its keys at the same moment: check against them.
                if attempt:
                    raise
        result.steps.append(f"keys in {settings.keys_dir} (mode 0600), bound to this database")
        if bound is not None and bound.adopted:
            result.steps.append("keys checked against the existing data and recorded")
        records = DkimSigner.load(settings).dns_records()
        result.steps.append(
            "DKIM records to publish for the relay domain:\n  "
            + "\n  ".join(zone_line(name, value) for name, value in records.items())
        )
        if issue_admin:
            with session_scope(factory) as session:
                has_admin = session.scalar(
                    select(ApiKey.id)
                    .where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None))
                    .limit(1)
                )
                if has_admin is None:
                    result.admin_token = issue_key(
                        session, Role.ADMIN, label="bootstrap admin"
                    ).token
    finally:
        engine.dispose()
    return result
