"""Witnessed ledger: cosignatures witnesses returned for checkpoints, and each configured
witness's status as the ledger sees it (branch r14-witness).

Revision ID: 0006_r14_witness
Revises: 0005
Create Date: 2026-11-27 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0006_r14_witness"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_cosignatures",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness", sa.String(length=255), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tree_size"],
            ["ledger_checkpoints.tree_size"],
            name=op.f("fk_ledger_cosignatures_tree_size_ledger_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tree_size", "witness", name=op.f("pk_ledger_cosignatures")),
    )
    op.create_table(
        "ledger_witness_status",
        sa.Column("witness", sa.String(length=255), nullable=False),
        sa.Column("vkey", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("cosigned_size", sa.BigInteger(), nullable=False),
        sa.Column("last_attempt_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_alert", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("witness", name=op.f("pk_ledger_witness_status")),
    )


def downgrade() -> None:
    op.drop_table("ledger_witness_status")
    op.drop_table("ledger_cosignatures")
