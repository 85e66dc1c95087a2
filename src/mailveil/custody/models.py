"""Custody's tables: key_fingerprints (which keys this database's data was made with) and
vault_keys (the vault's wrapped data-encryption keys, used by ``mailveil.vault``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.db.base import Base, UTCDateTime, utcnow

ACTIVE = "active"
RETIRED = "retired"


class KeyFingerprint(Base):
    """One key file the data depends on, by purpose and file name; never the key itself.

    Secret keys are fingerprinted with an HMAC under the key (nothing about the key can be
    learnt from it); key pairs by a hash of their public half.
    """

    __tablename__ = "key_fingerprints"

    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class VaultKey(Base):
    """A data-encryption key, wrapped under the KEK named by ``kek_id``."""

    __tablename__ = "vault_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(64), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)


__all__ = ["ACTIVE", "RETIRED", "KeyFingerprint", "VaultKey"]
