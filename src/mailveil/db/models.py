"""Imports every area's models so Base.metadata is complete (Alembic, create_all)."""

from mailveil.db.base import Base

__all__ = ["Base"]
