"""Operations: the alert outbox (signed webhooks with retries) and its ledger cursor.

The cursor starts at the ledger's size at upgrade time: an existing deployment is not
flooded with alerts for incidents that opened before alerting existed.

Revision ID: 0011_r14_ops
Revises: 0010_r14_keys
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0011_r14_ops"
down_revision: str | None = "0010_r14_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ops_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_alerts")),
        sa.UniqueConstraint("ledger_seq", name=op.f("uq_ops_alerts_ledger_seq")),
    )
    op.create_index(
        "ix_ops_alerts_state_next", "ops_alerts", ["state", "next_attempt_at"], unique=False
    )
    cursor = op.create_table(
        "ops_alert_cursor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ledger_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_alert_cursor")),
    )
    size = op.get_bind().scalar(sa.text("SELECT MAX(size) FROM ledger_head")) or 0
    op.bulk_insert(cursor, [{"id": 1, "ledger_size": int(size)}])


def downgrade() -> None:
    op.drop_table("ops_alert_cursor")
    op.drop_index("ix_ops_alerts_state_next", table_name="ops_alerts")
    op.drop_table("ops_alerts")
