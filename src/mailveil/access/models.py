"""Tables of the access area: reveal requests and their approvals, canaries, usage counters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.contacts.models import IdType
from mailveil.db.base import Base, UTCDateTime, utcnow

# pending -> granted -> used | expired ; pending -> denied | expired ; any open -> revoked
REVEAL_STATUSES = ("pending", "granted", "denied", "expired", "used", "revoked")
OPEN_REVEAL_STATUSES = ("pending", "granted")


class RevealRequest(Base):
    """One break-glass request: an employee asks to see one customer's real address for one
    case. ``version`` guards every state change (compare-and-set), so racing approvers or
    two concurrent views cannot both win."""

    __tablename__ = "reveal_requests"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    requester_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE")
    )
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    case_id: Mapped[int] = mapped_column(IdType, ForeignKey("support_cases.id", ondelete="CASCADE"))
    justification: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    approvals_required: Mapped[int] = mapped_column(Integer)
    approvals: Mapped[int] = mapped_column(Integer, default=0)
    views_allowed: Mapped[int] = mapped_column(Integer)
    views_used: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A pending request lapses at expires_at; a granted one at grant_expires_at.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    grant_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)

    __table_args__ = (
        Index("ix_reveal_requests_requester_status", "requester_id", "status"),
        Index("ix_reveal_requests_customer_id", "customer_id"),
        Index("ix_reveal_requests_status_expires", "status", "expires_at"),
    )


class RevealApproval(Base):
    """One approver's answer to one request; one per (request, approver)."""

    __tablename__ = "reveal_approvals"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("reveal_requests.id", ondelete="CASCADE")
    )
    approver_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE")
    )
    decision: Mapped[str] = mapped_column(String(8))  # "approve" | "deny"
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("request_id", "approver_id", name="uq_reveal_approvals_request_approver"),
    )


class Canary(Base):
    """A planted customer minted for one principal: mail to it, or to its alias, is a leak
    that names that principal. The customer row itself is an ordinary customer with
    ``is_canary`` set, so it looks like any other."""

    __tablename__ = "canaries"

    customer_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    principal_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE")
    )
    country: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_canaries_principal_country", "principal_id", "country"),)


class EmployeeUsage(Base):
    """Rows of customers returned to one employee in one clock hour (the limits' counter;
    the ledger stays the record of what was seen)."""

    __tablename__ = "employee_usage"

    principal_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)  # hours since the epoch, UTC
    rows: Mapped[int] = mapped_column(Integer, default=0)


__all__ = [
    "OPEN_REVEAL_STATUSES",
    "REVEAL_STATUSES",
    "Canary",
    "EmployeeUsage",
    "RevealApproval",
    "RevealRequest",
]
