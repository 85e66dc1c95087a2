"""The log side's tables: the cosignatures witnesses returned for the ledger's checkpoints,
and what the ledger knows of each configured witness (how far it cosigned, last error).

Neither is trusted for safety: a witness keeps its own record, and a ledger whose tables were
wiped or rewritten learns the witness's size from its 409 answer and is refused all the same.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.db.base import Base, UTCDateTime, utcnow


class LedgerCosignature(Base):
    """One witness's cosignature/v1 on one signed checkpoint (the newest it gave for it)."""

    __tablename__ = "ledger_cosignatures"

    tree_size: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("ledger_checkpoints.tree_size", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    witness: Mapped[str] = mapped_column(String(255), primary_key=True)  # its key name
    key_id: Mapped[str] = mapped_column(String(8))  # hex
    timestamp: Mapped[int] = mapped_column(BigInteger)  # seconds, as the witness signed it
    line: Mapped[str] = mapped_column(Text)  # the signature line exactly as returned
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LedgerWitnessStatus(Base):
    """The ledger's view of one configured witness."""

    __tablename__ = "ledger_witness_status"

    witness: Mapped[str] = mapped_column(String(255), primary_key=True)
    vkey: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    # The size the witness last cosigned for this ledger (from a cosignature or its 409).
    cosigned_size: Mapped[int] = mapped_column(BigInteger, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    # What the last alert about this witness said (the same refusal is not alerted twice).
    last_alert: Mapped[str | None] = mapped_column(String(200), nullable=True)


__all__ = ["LedgerCosignature", "LedgerWitnessStatus"]
