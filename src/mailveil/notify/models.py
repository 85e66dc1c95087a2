"""Tables of the notify area: facts, templates, suppressions, sends and their recipients.

Facts are the only source of eligibility; a send's recipients are rows whose ``state`` moves
pending -> delivering -> delivered | failed | unconfirmed (or starts ineligible / suppressed /
capped and stays so). ``delivering`` is committed before the SMTP transaction and
``delivered`` after it, so a crash in between is reconciled from the relay's own records,
never resent blindly (``notify.settle``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.contacts.models import IdType
from mailveil.db.base import Base, UTCDateTime, utcnow

CATEGORIES = ("transactional", "marketing", "security", "legal")
# draft: not yet startable (blast-radius approval pending); ready -> running -> completed |
# halted (a gate failed) | killed (the kill switch).
SEND_STATUSES = ("awaiting_approval", "ready", "running", "completed", "halted", "killed")
OPEN_SEND_STATUSES = ("awaiting_approval", "ready", "running")
RECIPIENT_STATES = (
    "pending",
    "delivering",
    "delivered",
    "unconfirmed",  # the relay's record of it never settled after a crash: unknown
    "failed",
    "ineligible",
    "suppressed",
    "capped",
)


class Fact(Base):
    __tablename__ = "notify_facts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    fact_id: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # Eligibility asks "facts of these kinds for these customers"; queries ask by kind.
        Index("ix_notify_facts_customer_kind", "customer_id", "kind", "occurred_at"),
        Index("ix_notify_facts_kind_occurred", "kind", "occurred_at"),
    )


class Template(Base):
    """One version of a template; versions are immutable, a change is a new version."""

    __tablename__ = "notify_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    sensitivity: Mapped[list[str]] = mapped_column(JSON, default=list)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner_id: Mapped[int] = mapped_column(Integer, ForeignKey("principals.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(64))
    declared_volume: Mapped[int | None] = mapped_column(Integer, nullable=True)
    suppression_list: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reviewer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    words: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The language subject and body are written (and spell-checked) in; translations:
    # {"de": {"subject", "body"}}, each checked in its own language.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    translations: Mapped[dict[str, dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("name", "version", name="uq_notify_templates_name_version"),)


class Suppression(Base):
    """A customer kept out of notifications in one scope: ``global``, ``category:<c>``,
    ``tag:<sensitivity tag>`` or ``list:<name>`` (a template's suppression list)."""

    __tablename__ = "notify_suppressions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    scope: Mapped[str] = mapped_column(String(80))
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("customer_id", "scope", name="uq_notify_suppressions_customer_scope"),
    )


class Send(Base):
    __tablename__ = "notify_sends"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    template_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("notify_templates.id", ondelete="RESTRICT")
    )
    corrects_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("notify_sends.id", ondelete="RESTRICT"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(24))
    audience: Mapped[int] = mapped_column(Integer, default=0)
    eligible: Mapped[int] = mapped_column(Integer, default=0)
    expected_volume: Mapped[int | None] = mapped_column(Integer, nullable=True)
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approval_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    approved_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    stages: Mapped[list[float]] = mapped_column(JSON, default=list)
    soak_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    thresholds: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    stage: Mapped[int] = mapped_column(Integer, default=0)  # index of the stage under way
    stage_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    halt_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The guard's comparison of the audience with the rule's eligible population.
    targeting: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stopped_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Which worker drives the send, until when (a dead worker's lease lapses).
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_notify_sends_template_status", "template_id", "status"),)


class Recipient(Base):
    __tablename__ = "notify_recipients"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    send_id: Mapped[int] = mapped_column(IdType, ForeignKey("notify_sends.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"))
    # A keyed hash of (send, customer): stages take recipients in this order, so each stage
    # is a random sample of the whole audience, chosen without holding it in memory.
    bucket: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fact_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    relay_token: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    # The translation this recipient gets (their audience entry named it); None: the
    # template's own language.
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The worker whose batch this recipient is in, until when (``notify.claims``): several
    # workers split a stage; a dead worker's batch is claimed again once this lapsed.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claim_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("send_id", "customer_id", name="uq_notify_recipients_send_customer"),
        Index("ix_notify_recipients_send_state_bucket", "send_id", "state", "bucket"),
        Index("ix_notify_recipients_send_bucket", "send_id", "bucket"),
        # Frequency caps: a customer's recent deliveries.
        Index("ix_notify_recipients_customer_delivered", "customer_id", "delivered_at"),
    )


__all__ = [
    "CATEGORIES",
    "OPEN_SEND_STATUSES",
    "RECIPIENT_STATES",
    "SEND_STATUSES",
    "Fact",
    "Recipient",
    "Send",
    "Suppression",
    "Template",
]
