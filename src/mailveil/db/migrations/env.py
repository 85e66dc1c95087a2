"""Alembic environment: runs on the connection mailveil hands it (see mailveil.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mailveil.db.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("mailveil migrations run through mailveil.db.migrate, not the alembic CLI")
_run(connection)
