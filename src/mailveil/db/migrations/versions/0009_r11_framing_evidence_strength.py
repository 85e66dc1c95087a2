"""Evidence strength: signals and culprits say how sure each piece of evidence is; a
containment named by weak evidence waits for a second person; abuse reports keep the reason
for their outcome and how often a pending one was re-checked.

Culprits named before this revision have no recorded strength: they count as not strong, so
containing them asks for a second person (the safe side for evidence nobody graded).

Revision ID: 0009_r11_framing
Revises: 0008_r15_regulator
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0009_r11_framing"
down_revision: str | None = "0008_r15_regulator"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_strength", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("recipient_strength", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("candidate_source_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_signals_candidate_source_id_principals"),
            "principals",
            ["candidate_source_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index("ix_signals_candidate_source", ["candidate_source_id"], unique=False)
    with op.batch_alter_table("incident_culprits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("strength", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("strong", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("score", sa.Float(), nullable=True))
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("containment_requested_by", sa.String(length=200), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "containment_requested_at",
                mailveil.db.base.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("containment_reason", sa.String(length=500), nullable=True))
    with op.batch_alter_table("abuse_reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=300), nullable=True))
        batch_op.add_column(
            sa.Column("checks", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(
            sa.Column("checked_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_abuse_reports_outcome", ["outcome", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("abuse_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_abuse_reports_outcome")
        batch_op.drop_column("checked_at")
        batch_op.drop_column("checks")
        batch_op.drop_column("reason")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("containment_reason")
        batch_op.drop_column("containment_requested_at")
        batch_op.drop_column("containment_requested_by")
    with op.batch_alter_table("incident_culprits", schema=None) as batch_op:
        batch_op.drop_column("score")
        batch_op.drop_column("strong")
        batch_op.drop_column("strength")
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_index("ix_signals_candidate_source")
        batch_op.drop_constraint(
            batch_op.f("fk_signals_candidate_source_id_principals"), type_="foreignkey"
        )
        batch_op.drop_column("candidate_source_id")
        batch_op.drop_column("recipient_strength")
        batch_op.drop_column("source_strength")
