"""Relay records that agree with what happened: a sender's retry of a deferred message takes
over its row (``retry_key``, ``attempts``), and rows left ``sending`` by a stopped relay are
found by status and age (``relay.reconcile``).

Rows written before this revision have no retry key: a retry of one is a new message, as
before.

Revision ID: 0014_r16_relay
Revises: 0013_r18_platform
Create Date: 2026-12-06 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_r16_relay"
down_revision: str | None = "0013_r18_platform"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("relay_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="1", nullable=False))
        batch_op.create_index("ix_relay_messages_retry_key", ["retry_key"], unique=False)
        batch_op.create_index(
            "ix_relay_messages_status_updated", ["status", "updated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("relay_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_relay_messages_status_updated")
        batch_op.drop_index("ix_relay_messages_retry_key")
        batch_op.drop_column("attempts")
        batch_op.drop_column("retry_key")
