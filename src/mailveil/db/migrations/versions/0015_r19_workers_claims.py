"""Recipient batches claimed by one worker at a time: several workers split a stage, each
claiming a batch of pending recipients for a lease (``notify.claims``); a dead worker's batch
is claimed again once its lease lapsed.

Rows written before this revision are unclaimed: anyone may claim them.

Revision ID: 0015_r19_workers_claims
Revises: 0014_r16_relay
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailveil.db.base import UTCDateTime

revision: str = "0015_r19_workers_claims"
down_revision: str | None = "0014_r16_relay"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notify_recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("claim_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notify_recipients", schema=None) as batch_op:
        batch_op.drop_column("claim_until")
        batch_op.drop_column("claimed_by")
