"""The console's one table: signed-in sessions, kept on the server so that signing out, an
idle timeout or a revoked API key ends them at once (a cookie only carries a random token,
stored here as its SHA-256)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.contacts.models import IdType
from mailveil.db.base import Base, UTCDateTime, utcnow


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    method: Mapped[str] = mapped_column(String(8))  # apikey | oidc
    # The API key signed in with (its revocation ends the session), or None for OIDC.
    api_key_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=True
    )
    principal_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE"), nullable=True
    )
    # The key id, or the OIDC issuer's subject: who signed in, as the provider names them.
    subject: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(200), default="")
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    # How the ledger names this person's actions.
    actor: Mapped[str] = mapped_column(String(255))
    csrf_secret: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_console_sessions_api_key", "api_key_id"),)


__all__ = ["ConsoleSession"]
