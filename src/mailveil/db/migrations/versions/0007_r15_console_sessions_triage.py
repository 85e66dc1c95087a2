"""The console: signed-in sessions (console_sessions), and a person's triage of each signal
(signals.triage, triage_reason, triaged_by, triaged_at).

Revision ID: 0007_r15_console
Revises: 0006_r14_witness
Create Date: 2026-12-06 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0007_r15_console"
down_revision: str | None = "0006_r14_witness"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("principal_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("csrf_secret", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", mailveil.db.base.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", mailveil.db.base.UTCDateTime(), nullable=False),
        sa.Column("expires_at", mailveil.db.base.UTCDateTime(), nullable=False),
        sa.Column("ended_at", mailveil.db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_console_sessions_api_key", ["api_key_id"], unique=False)
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("triage", sa.String(length=16), server_default="new", nullable=False)
        )
        batch_op.add_column(sa.Column("triage_reason", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("triaged_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("triaged_at", mailveil.db.base.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_column("triaged_at")
        batch_op.drop_column("triaged_by")
        batch_op.drop_column("triage_reason")
        batch_op.drop_column("triage")
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_console_sessions_api_key")
    op.drop_table("console_sessions")
