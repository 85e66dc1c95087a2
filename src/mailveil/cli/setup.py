"""`mailveil init`: data directory, keys, schema and the bootstrap admin key, idempotently."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import select

from mailveil.auth.keys import Role, issue_key
from mailveil.auth.models import ApiKey
from mailveil.cli.common import open_engine
from mailveil.config import Settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_session_factory, session_scope
from mailveil.ledger.signing import init_signing_key
from mailveil.relay.dkim import init_dkim_keys
from mailveil.relay.messages import init_verp_key
from mailveil.vault import init_keys


@dataclass
class InitResult:
    steps: list[str] = field(default_factory=list)
    admin_token: str | None = None


def initialise(settings: Settings, *, issue_admin: bool = True) -> InitResult:
    result = InitResult()
    # Only the service's user reads the data: keys, the database (encrypted addresses) and logs.
    for folder in (settings.data_dir, settings.keys_dir, settings.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    result.steps.append(f"data directory {settings.data_dir}")
    init_keys(settings)
    init_signing_key(settings)
    dkim_records = init_dkim_keys(settings)
    init_verp_key(settings)
    result.steps.append(f"keys in {settings.keys_dir} (mode 0600)")
    result.steps.append(
        "DKIM records to publish for the relay domain:\n  " + "\n  ".join(dkim_records)
    )
    engine = open_engine(settings)
    try:
        upgrade(engine)
        result.steps.append("database schema at the latest migration")
        db_file = settings.data_dir / "mailveil.db"
        if settings.db_url == f"sqlite:///{db_file.as_posix()}" and db_file.exists():
            os.chmod(db_file, 0o600)
        if issue_admin:
            with session_scope(make_session_factory(engine)) as session:
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
