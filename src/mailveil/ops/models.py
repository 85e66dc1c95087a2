"""The alert outbox: one row per alert raised from the ledger, kept until its webhook
delivery succeeded (or was given up after ``alert_max_attempts``), so a restart loses none."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.db.base import Base, UTCDateTime, utcnow


class OpsAlert(Base):
    __tablename__ = "ops_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The ledger entry that raised it: one alert per entry, whoever enqueues it first.
    ledger_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, exactly as signed and sent
    # pending (to send), delivered, failed (given up; `mailveil alerts retry` re-queues).
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)

    __table_args__ = (Index("ix_ops_alerts_state_next", "state", "next_attempt_at"),)


class OpsAlertCursor(Base):
    """One row (id 1): the ledger size up to which entries were looked at for alerts."""

    __tablename__ = "ops_alert_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ledger_size: Mapped[int] = mapped_column(BigInteger)


__all__ = ["OpsAlert", "OpsAlertCursor"]
