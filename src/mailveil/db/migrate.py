"""Schema management: Alembic migrations shipped inside the package."""

from __future__ import annotations

from sqlalchemy import Engine

from mailveil.db.models import Base


def upgrade(engine: Engine) -> None:
    """Bring the schema to head. (Interim: create_all until the first revision is generated.)"""
    Base.metadata.create_all(engine)
