"""Aliases by principal: a covering index (principal, customer, created, revoked) replaces the
single-column one, so a principal's aliases are read in customer order from the index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 01:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.create_index(
            "ix_aliases_principal_customer",
            ["principal_id", "customer_id", "created_at", "revoked_at"],
            unique=False,
        )
        batch_op.drop_index("ix_aliases_principal_id")


def downgrade() -> None:
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.create_index("ix_aliases_principal_id", ["principal_id"], unique=False)
        batch_op.drop_index("ix_aliases_principal_customer")
