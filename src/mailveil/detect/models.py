"""Tables of the detection area: signals, incidents and their culprits, abuse reports, and
the cursor of the ledger scan. Nothing here holds a customer's real address."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.contacts.models import IdType
from mailveil.db.base import Base, UTCDateTime, utcnow

SIGNAL_KINDS = (
    "stranger_at_alias",
    "canary_hit",
    "abuse_report",
    "access_anomaly",
    "access_refusals",
    "send_gate_failed",
)
INCIDENT_STATUSES = ("open", "confirmed", "contained", "closed", "dismissed")
TRIAGE_STATES = ("new", "confirmed", "dismissed")


class Incident(Base):
    """Signals grouped around one source principal (the one a leak points back to)."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    title: Mapped[str] = mapped_column(String(300))
    source_principal_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="SET NULL"), nullable=True
    )
    # When the first signal was detected: the start of the 72-hour notification clock.
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    signal_count: Mapped[int] = mapped_column(Integer, default=0)
    # Containment of a culprit named only by weak evidence waits for a second person: who
    # asked first, when and why (``incidents.containment``).
    containment_requested_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    containment_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    containment_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)

    __table_args__ = (Index("ix_incidents_source_status", "source_principal_id", "status"),)


class Signal(Base):
    """One piece of evidence that contact data went where it should not."""

    __tablename__ = "signals"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Who the leak points back to (the alias's or canary's principal, or the top of a ranking).
    source_principal_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="SET NULL"), nullable=True
    )
    # Who received the data, when the sender matched a known principal.
    recipient_principal_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="SET NULL"), nullable=True
    )
    customer_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("customers.id", ondelete="SET NULL"), nullable=True
    )
    alias: Mapped[str | None] = mapped_column(String(320), nullable=True)
    confidence: Mapped[str] = mapped_column(String(16))  # exact | ranked | anomaly
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[str] = mapped_column(String(500))
    # Every piece of evidence, counted or not, under "pieces" (``strength``).
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The strength of the source and recipient pieces (``strength.STRENGTHS``), counted or
    # not; the principal columns above are set only when the piece counts.
    source_strength: Mapped[str | None] = mapped_column(String(16), nullable=True)
    recipient_strength: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The principal the source piece points at even before it counts (a stranger at one
    # customer's alias waits for a second customer's: ``attribution``).
    candidate_source_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="SET NULL"), nullable=True
    )
    # The ledger entry the signal was read from (strangers, canaries) or written as.
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    incident_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="SET NULL"), nullable=True
    )
    # A person's triage: new | confirmed | dismissed (with why), each change in the ledger.
    triage: Mapped[str] = mapped_column(String(16), default="new", server_default="new")
    triage_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    triaged_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    triaged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("kind", "ledger_seq", name="uq_signals_kind_ledger_seq"),
        Index("ix_signals_kind_created", "kind", "created_at"),
        Index("ix_signals_source", "source_principal_id"),
        Index("ix_signals_incident", "incident_id"),
        Index("ix_signals_candidate_source", "candidate_source_id"),
    )


class IncidentCulprit(Base):
    """A principal an incident names, as the source of the data or as its recipient."""

    __tablename__ = "incident_culprits"

    incident_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    principal_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))  # source | recipient
    evidence_count: Mapped[int] = mapped_column(Integer, default=0)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The strongest evidence that named it, and whether any counted piece is strong
    # (``strength``): a culprit with none needs a second person to contain it.
    strength: Mapped[str | None] = mapped_column(String(16), nullable=True)
    strong: Mapped[bool] = mapped_column(Boolean, default=False)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)


class AbuseReport(Base):
    """One report a customer sent (abuse mailbox or API), with what the intake extracted."""

    __tablename__ = "abuse_reports"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    channel: Mapped[str] = mapped_column(String(16))  # mailbox | api
    reporter_customer_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("customers.id", ondelete="SET NULL"), nullable=True
    )
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    verification: Mapped[str] = mapped_column(String(32))  # how (or why not)
    outcome: Mapped[str] = mapped_column(String(32))
    shape: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The spam's sender as recorded (a customer's address is recorded as customer:<id>).
    sender: Mapped[str | None] = mapped_column(String(320), nullable=True)
    sender_domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    alias: Mapped[str | None] = mapped_column(String(320), nullable=True)
    raw_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    raw_bytes: Mapped[int] = mapped_column(Integer)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    signal_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("signals.id", ondelete="SET NULL"), nullable=True
    )
    # Why the outcome is what it is, in words (never quoting the report).
    reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # A report kept pending (its sender could not be checked: DNS did not answer) is
    # re-checked (``relay.abuse_intake.process_spool``); how often so far, and when last.
    checks: Mapped[int] = mapped_column(Integer, default=0)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_abuse_reports_sender_domain", "sender_domain"),
        Index("ix_abuse_reports_sender", "sender"),
        Index("ix_abuse_reports_outcome", "outcome", "id"),
    )


class DetectCursor(Base):
    """How far the ledger scan has read (``name`` = the job)."""

    __tablename__ = "detect_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=-1)


__all__ = [
    "INCIDENT_STATUSES",
    "SIGNAL_KINDS",
    "TRIAGE_STATES",
    "AbuseReport",
    "DetectCursor",
    "Incident",
    "IncidentCulprit",
    "Signal",
]
