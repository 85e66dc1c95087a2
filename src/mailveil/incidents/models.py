"""Tables of the regulator report: the controller's details, each incident's assessment
(the privacy officer's judgment: ENISA inputs, breach window, measures proposed), the
submissions made to authorities (Art. 33(4) phases) and the notify / do-not-notify decisions.

Every row written here is also a ledger entry (``report_controller``, ``report_assessment``,
``report_submission``, ``report_decision``); the rows are what the report reads quickly, the
ledger is what proves when and by whom. Nothing here holds a customer's address."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.contacts.models import IdType
from mailveil.db.base import Base, UTCDateTime, utcnow

CONTROLLER_ROW = 1  # one controller per deployment


class ReportController(Base):
    """The controller named in every report (GDPR Art. 33(3)(b)): one row, versioned."""

    __tablename__ = "report_controller"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(String(500), default="")
    # ISO 3166-1 country of the main establishment (GDPR Art. 56 one-stop-shop), or "".
    establishment_country: Mapped[str] = mapped_column(String(2), default="")
    dpo_name: Mapped[str] = mapped_column(String(200), default="")
    dpo_email: Mapped[str] = mapped_column(String(320), default="")
    dpo_phone: Mapped[str] = mapped_column(String(40), default="")
    representative_name: Mapped[str] = mapped_column(String(200), default="")
    representative_address: Mapped[str] = mapped_column(String(500), default="")
    representative_email: Mapped[str] = mapped_column(String(320), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class IncidentAssessment(Base):
    """The privacy officer's inputs to one incident's report (see ``assessment.FIELDS``)."""

    __tablename__ = "incident_assessments"

    incident_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ReportSubmission(Base):
    """One submission of the report to one recipient (an authority, an attorney general, a
    CSIRT): the initial notification, each later phase, the final one."""

    __tablename__ = "report_submissions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    incident_id: Mapped[int] = mapped_column(IdType, ForeignKey("incidents.id", ondelete="CASCADE"))
    obligation: Mapped[str] = mapped_column(String(64))  # e.g. "EU-IE:authority"
    phase: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per (incident, obligation)
    kind: Mapped[str] = mapped_column(String(16))  # initial | update | final
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reference: Mapped[str] = mapped_column(String(200), default="")  # the authority's case no.
    note: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(255))
    # The report as submitted (its stable content) and what changed since the last phase.
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    snapshot_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index("ix_report_submissions_incident", "incident_id", "obligation", "phase"),
    )


class ReportDecision(Base):
    """A decision to notify, or not, one recipient of one incident, with its reason. The
    newest per (incident, obligation) is the one in force; older ones stay as history."""

    __tablename__ = "report_decisions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    incident_id: Mapped[int] = mapped_column(IdType, ForeignKey("incidents.id", ondelete="CASCADE"))
    obligation: Mapped[str] = mapped_column(String(64))
    notify: Mapped[bool] = mapped_column()
    reason_code: Mapped[str] = mapped_column(String(64))
    explanation: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_report_decisions_incident", "incident_id", "obligation", "id"),)


__all__ = [
    "CONTROLLER_ROW",
    "IncidentAssessment",
    "ReportController",
    "ReportDecision",
    "ReportSubmission",
]
