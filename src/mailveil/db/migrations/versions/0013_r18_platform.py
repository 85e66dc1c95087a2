"""The marketplace platform (issue 18): when an order entered its status (the conversation's
contact window runs from it); the events webhook's cursor; messages a seller marked as
needing no response.

Orders from before this revision keep NULL: their window runs from placed_at.

Revision ID: 0013_r18_platform
Revises: 0012_r17_notify
Create Date: 2026-12-06 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0013_r18_platform"
down_revision: str | None = "0012_r17_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "status_changed_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=True
            )
        )
    op.create_table(
        "event_deliveries",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("cursor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("updated_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_event_deliveries")),
    )
    op.create_table(
        "no_response_needed",
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("marked_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["relay_messages.id"],
            name=op.f("fk_no_response_needed_message_id_relay_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principals.id"],
            name=op.f("fk_no_response_needed_principal_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_no_response_needed")),
    )
    op.create_index(
        op.f("ix_no_response_needed_principal_id"),
        "no_response_needed",
        ["principal_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_no_response_needed_principal_id"), table_name="no_response_needed")
    op.drop_table("no_response_needed")
    op.drop_table("event_deliveries")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("status_changed_at")
