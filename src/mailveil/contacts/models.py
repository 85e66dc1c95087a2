"""Contacts tables: customers, principals, orders, support cases, aliases.

A customer's real address is only ever here as vault ciphertext plus its blind index; the
columns are opaque to everything but ``mailveil.vault``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.config.settings import SettingsError
from mailveil.db.base import Base, UTCDateTime, utcnow

# 64-bit ids on PostgreSQL (hundreds of millions of customers, billions of orders and
# aliases); INTEGER PRIMARY KEY (the rowid) on SQLite.
IdType = BigInteger().with_variant(Integer(), "sqlite")

PRINCIPAL_KINDS = ("seller", "employee", "service")
PRINCIPAL_STATUSES = ("active", "suspended")
ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "returned", "closed")


def status_clauses(text: str, setting: str, shape: str, separators: str) -> list[tuple[str, str]]:
    """Split a ``status=value`` setting into (order status, value) pairs.

    Both the relay's reasons by status and the lifecycle windows are written this way; the
    clauses are split at any of ``separators``. Raises ``SettingsError`` naming ``setting``
    and the expected ``shape`` for a clause without ``=`` or with an unknown status.
    """
    for sep in separators[1:]:
        text = text.replace(sep, separators[0])
    out: list[tuple[str, str]] = []
    for clause in text.split(separators[0]):
        if not clause.strip():
            continue
        status, eq, value = clause.partition("=")
        status = status.strip().lower()
        if not eq or status not in ORDER_STATUSES:
            raise SettingsError(
                f"{setting}: {clause.strip()!r} must be '{shape}' with a status "
                f"among {', '.join(ORDER_STATUSES)}"
            )
        out.append((status, value))
    return out


CASE_STATUSES = ("open", "closed")


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    address_ct: Mapped[bytes] = mapped_column(LargeBinary)
    address_dek: Mapped[str] = mapped_column(
        String(32), ForeignKey("vault_keys.id", ondelete="RESTRICT"), index=True
    )
    address_bidx: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    # ISO 3166-2 subdivision within the country ("CA" for California), where the marketplace
    # knows it: US state breach laws apply by the state a person lives in.
    subdivision: Mapped[str | None] = mapped_column(String(3), nullable=True)
    opt_outs: Mapped[list[str]] = mapped_column(JSON, default=list)
    sensitive_topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_canary: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Principal(Base):
    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("kind", "external_id", name="uq_principals_kind_external_id"),
    )


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    seller_id: Mapped[int] = mapped_column(Integer, ForeignKey("principals.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="placed")
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the order entered its current status: the conversation's contact window for that
    # status runs from here (contacts.lifecycle). NULL on rows older than it: placed_at.
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        # The seller rule asks "latest order of this customer with this seller".
        Index("ix_orders_customer_seller_placed", "customer_id", "seller_id", "placed_at"),
        Index("ix_orders_seller_id", "seller_id"),
    )


class SupportCase(Base):
    __tablename__ = "support_cases"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    assignee_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # The employee rule asks "an open case of this customer assigned to this employee".
        Index("ix_support_cases_customer_assignee_status", "customer_id", "assignee_id", "status"),
        Index("ix_support_cases_assignee_id", "assignee_id"),
    )


class Alias(Base):
    """The one alias of a (customer, principal) pair: ``address`` is what the principal sees,
    ``reverse_address`` what the customer sees for that principal."""

    __tablename__ = "aliases"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    principal_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE")
    )
    address: Mapped[str] = mapped_column(String(320), unique=True)
    reverse_address: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(255), nullable=True)

    __table_args__ = (
        UniqueConstraint("customer_id", "principal_id", name="uq_aliases_customer_principal"),
        # Everything a principal holds, in customer order, from the index alone: the blast
        # radius of a culprit with millions of aliases reads no table page for them.
        Index(
            "ix_aliases_principal_customer",
            "principal_id",
            "customer_id",
            "created_at",
            "revoked_at",
        ),
    )


__all__ = [
    "CASE_STATUSES",
    "ORDER_STATUSES",
    "PRINCIPAL_KINDS",
    "PRINCIPAL_STATUSES",
    "Alias",
    "Customer",
    "IdType",
    "Order",
    "Principal",
    "SupportCase",
]
