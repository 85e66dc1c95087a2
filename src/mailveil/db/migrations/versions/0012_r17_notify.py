"""Workers and sends at scale: the periodic jobs' claimed slots (``worker_jobs``); a
template's language and translations, the translation each recipient gets; what the guard
found about a send's targeting.

Revision ID: 0012_r17_notify
Revises: 0011_r14_ops
Create Date: 2026-12-06 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0012_r17_notify"
down_revision: str | None = "0011_r14_ops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_jobs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", mailveil.db.base.UTCDateTime(), nullable=True),
        sa.Column("finished_at", mailveil.db.base.UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_jobs")),
    )
    with op.batch_alter_table("notify_templates", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), server_default="en", nullable=False)
        )
        batch_op.add_column(sa.Column("translations", sa.JSON(), nullable=True))
    with op.batch_alter_table("notify_recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))
    with op.batch_alter_table("notify_sends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("targeting", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notify_sends", schema=None) as batch_op:
        batch_op.drop_column("targeting")
    with op.batch_alter_table("notify_recipients", schema=None) as batch_op:
        batch_op.drop_column("language")
    with op.batch_alter_table("notify_templates", schema=None) as batch_op:
        batch_op.drop_column("translations")
        batch_op.drop_column("language")
    op.drop_table("worker_jobs")
