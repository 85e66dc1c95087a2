"""Tables of the marketplace platform (issue 18). No address in any of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.contacts.models import IdType
from mailveil.db.base import Base, UTCDateTime, utcnow
from mailveil.ledger.models import SeqType


class EventDelivery(Base):
    """Where the events webhook stands: the last cursor the receiver took, and retries."""

    __tablename__ = "event_deliveries"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[int] = mapped_column(SeqType, default=-1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class NoResponseNeeded(Base):
    """A customer's message its seller marked as needing no response: left out of the
    seller's response times (as Amazon lets sellers do)."""

    __tablename__ = "no_response_needed"

    message_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("relay_messages.id", ondelete="CASCADE"), primary_key=True
    )
    principal_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE"), index=True
    )
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["EventDelivery", "NoResponseNeeded"]
