"""Storage: the declarative base, engines and sessions, and Alembic migrations."""

from mailveil.db.base import Base
from mailveil.db.session import make_engine, make_session_factory, session_scope

__all__ = ["Base", "make_engine", "make_session_factory", "session_scope"]
