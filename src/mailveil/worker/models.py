"""The one table of the worker area: the last slot each periodic job was claimed for.

Every ``mailveil worker`` process may run the scheduler; a job's run for one slot (an
interval's number, a day) is claimed with one conditional UPDATE, so several hosts never
run the same slot twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.db.base import Base, UTCDateTime


class WorkerJob(Base):
    __tablename__ = "worker_jobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(BigInteger)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(300), nullable=True)


__all__ = ["WorkerJob"]
