"""Ledger tables.

``ledger_entries`` stores each entry's leaf (the exact JSON text that was hashed, see
``leaf.py``) and its hash; every other column is GENERATED from the leaf by the database
(``leaf ->> 'alias'`` and so on: SQLite >= 3.38 and PostgreSQL read the same expression), so
the indexed columns that investigations query cannot drift from what the hash chain and the
signed checkpoints commit to. On PostgreSQL the leaf column is of type ``json``, which keeps
the text byte for byte; select it as text (the mapped attribute does).

``seq`` is 0-based and equals the entry's Merkle leaf index. Times are integer microseconds
since the Unix epoch, UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Text,
    cast,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import UserDefinedType

from mailveil.db.base import Base
from mailveil.ledger.layout import GENERATED_COLUMNS

# INTEGER PRIMARY KEY on SQLite is the rowid: the seq-ordered scan verify does is the table.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class _PgJsonText(UserDefinedType[str]):
    """PostgreSQL ``json`` (kept verbatim, unlike jsonb) that reads back as the raw text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSON"

    def column_expression(self, colexpr: ColumnElement[Any]) -> ColumnElement[str]:
        return cast(colexpr, Text)


LeafType = Text().with_variant(_PgJsonText(), "postgresql")


class LeafDerived(Computed):
    """A column generated from the leaf: STORED on PostgreSQL (the only kind before 18),
    VIRTUAL on SQLite, where it halves the table and speeds up appends and verify scans
    (the indexed ones are materialised in their indexes all the same)."""

    inherit_cache = True


@compiles(LeafDerived, "sqlite")
def _virtual_on_sqlite(element: LeafDerived, compiler: Any, **kw: Any) -> str:
    sql = compiler.sql_compiler.process(element.sqltext, include_table=False, literal_binds=True)
    return f"GENERATED ALWAYS AS ({sql}) VIRTUAL"


def _field(name: str) -> LeafDerived:
    return LeafDerived(f"leaf ->> '{name}'", persisted=True)


def from_time_us(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    leaf: Mapped[str] = mapped_column(LeafType)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    # Generated from the leaf; read-only.
    time_us: Mapped[int] = mapped_column(
        BigInteger, LeafDerived("CAST(leaf ->> 'time_us' AS BIGINT)", persisted=True)
    )
    kind: Mapped[str] = mapped_column(Text, _field("kind"))
    actor: Mapped[str | None] = mapped_column(Text, _field("actor"))
    subject: Mapped[str | None] = mapped_column(Text, _field("subject"))
    alias: Mapped[str | None] = mapped_column(Text, _field("alias"))
    purpose: Mapped[str | None] = mapped_column(Text, _field("purpose"))
    ref: Mapped[str | None] = mapped_column(Text, _field("ref"))
    detail: Mapped[str] = mapped_column(Text, _field("detail"))  # JSON text of the object
    prev_hash: Mapped[str] = mapped_column(Text, _field("prev"))  # hex

    __table_args__ = (
        # The leaf names its own position: a row cannot be renumbered without changing
        # what was hashed.
        CheckConstraint("CAST(leaf ->> 'seq' AS BIGINT) = seq", name="leaf_seq"),
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


__all__ = [
    "GENERATED_COLUMNS",
    "LeafDerived",
    "LedgerCheckpoint",
    "LedgerEntry",
    "LedgerHead",
    "LedgerNode",
    "from_time_us",
]
