"""Imports every area's models so Base.metadata is complete (Alembic, create_all)."""

from mailveil.db.base import Base
from mailveil.ledger import models as _ledger_models  # noqa: F401

__all__ = ["Base"]
