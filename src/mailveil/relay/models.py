"""The relay's tables: every message it handed to the smarthost, and hard bounces per recipient.

``relay_messages``
    One row per message the relay hands to the smarthost, in either direction
    (``relay.messages`` says what each column is for and issues the VERP tokens that name
    its rows).
``relay_bounce_marks``
    Hard bounces counted per recipient (``relay.bounces``); a marked address is refused
    by the relay (``relay.routes`` reads the mark with each route).

Kept apart from the code that reads and writes them so that the modules that only query them
(routes, the journal, reconcile, bounces) import a table, not each other, and ``db.models``
imports only this module for the relay's part of the schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    delete,
    event,
    inspect,
)
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from mailveil.contacts.models import Customer, IdType
from mailveil.db.base import Base, UTCDateTime, utcnow


class RelayMessage(Base):
    __tablename__ = "relay_messages"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)
    direction: Mapped[str] = mapped_column(String(16))
    principal_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE")
    )
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message_id: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="sending")
    # The reply code the smarthost (or a bounce) gave when status is not delivered.
    status_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # What makes a sender's retry the same message (relay.reconcile.retry_key), and how many
    # times the smarthost was asked for it.
    retry_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __table_args__ = (
        # thread_exists: "was this Message-ID issued for this pair?"
        Index("ix_relay_messages_message_id", "message_id"),
        Index("ix_relay_messages_customer_principal", "customer_id", "principal_id"),
        Index("ix_relay_messages_retry_key", "retry_key"),
        # reconcile: rows still sending (or retryable) by age
        Index("ix_relay_messages_status_updated", "status", "updated_at"),
    )


class RelayBounceMark(Base):
    """Hard bounces counted per recipient: one row per customer or principal that bounced."""

    __tablename__ = "relay_bounce_marks"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("customers.id", ondelete="CASCADE"), nullable=True, unique=True
    )
    principal_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE"), nullable=True, unique=True
    )
    hard_bounces: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_bounce_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set when hard_bounces reaches settings.relay_hard_bounce_limit.
    marked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(
            "(customer_id IS NULL) <> (principal_id IS NULL)",
            name="ck_relay_bounce_marks_one_recipient",
        ),
    )


def _bidx(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


@event.listens_for(Customer, "before_update")
def _clear_on_address_change(_mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    """A customer's hard bounces were against the old address: when the address changes
    (``contacts.change_customer_address``, or any ORM update of it) the marks go, in the same
    flush and transaction. A listener here rather than a call from contacts: contacts sits
    below the relay and must not know its tables; the relay reacts to contacts' change."""
    history = inspect(target).attrs.address_bidx.history
    if not history.added:
        return
    if history.deleted and {_bidx(v) for v in history.added} == {_bidx(v) for v in history.deleted}:
        return  # the same address sealed again: its bounces still stand
    marks = cast(Table, RelayBounceMark.__table__)
    connection.execute(delete(marks).where(marks.c.customer_id == target.id))


__all__ = ["RelayBounceMark", "RelayMessage"]
