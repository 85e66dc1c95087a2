"""Key custody: a fingerprint of every key the data was made with, so a process started with
another key set is refused instead of forking the keys (branch r14-keys).

Revision ID: 0010_r14_keys
Revises: 0009_r11_framing
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0010_r14_keys"
down_revision: str | None = "0009_r11_framing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_fingerprints",
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("purpose", "key_id", name=op.f("pk_key_fingerprints")),
    )


def downgrade() -> None:
    op.drop_table("key_fingerprints")
