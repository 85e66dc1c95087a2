"""Ledger tables.

``ledger_entries.seq`` is 0-based and equals the entry's Merkle leaf index. Times are integer
microseconds since the Unix epoch (UTC) so the leaf encoding is identical on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailveil.db.base import Base

# INTEGER PRIMARY KEY on SQLite is the rowid: the seq-ordered scan verify does is the table.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


def from_time_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    time_us: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))
    alias: Mapped[str | None] = mapped_column(String(320))
    purpose: Mapped[str | None] = mapped_column(String(255))
    ref: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON text, part of the leaf
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (
        # seq in each index so "entries for X, paged by seq" is one index range scan.
        Index("ix_ledger_entries_alias_seq", "alias", "seq"),
        Index("ix_ledger_entries_subject_seq", "subject", "seq"),
        Index("ix_ledger_entries_actor_seq", "actor", "seq"),
        Index("ix_ledger_entries_kind_time", "kind", "time_us"),
    )

    @property
    def time(self) -> datetime:
        return from_time_us(self.time_us)


class LedgerHead(Base):
    """One row (id 1): where the next append starts. Locked by every appender."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    frontier: Mapped[bytes] = mapped_column(LargeBinary)  # right-edge subtree roots, see merkle
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    checkpoint_time_us: Mapped[int] = mapped_column(BigInteger)


class LedgerCheckpoint(Base):
    __tablename__ = "ledger_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    time_us: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text)  # C2SP signed note, as served


class LedgerNode(Base):
    """Roots of complete perfect subtrees whose height is a multiple of 8 (256, 65536, ...
    leaves), so proofs over big trees read at most 255 stored hashes per subtree."""

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


__all__ = ["LedgerCheckpoint", "LedgerEntry", "LedgerHead", "LedgerNode", "from_time_us"]
