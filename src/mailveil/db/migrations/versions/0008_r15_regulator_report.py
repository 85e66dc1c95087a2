"""Regulator report: the controller's details, each incident's assessment, the submissions
to authorities and the notify / do-not-notify decisions; customers gain an optional
subdivision (the US state a person lives in decides which breach law applies) (branch
r15-regulator).

Revision ID: 0008_r15_regulator
Revises: 0007_r15_console
Create Date: 2026-12-06 20:33:33.583062
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0008_r15_regulator"
down_revision: str | None = "0007_r15_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_controller",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("establishment_country", sa.String(length=2), nullable=False),
        sa.Column("dpo_name", sa.String(length=200), nullable=False),
        sa.Column("dpo_email", sa.String(length=320), nullable=False),
        sa.Column("dpo_phone", sa.String(length=40), nullable=False),
        sa.Column("representative_name", sa.String(length=200), nullable=False),
        sa.Column("representative_address", sa.String(length=500), nullable=False),
        sa.Column("representative_email", sa.String(length=320), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_controller")),
    )
    op.create_table(
        "incident_assessments",
        sa.Column(
            "incident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_assessments_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("incident_id", name=op.f("pk_incident_assessments")),
    )
    op.create_table(
        "report_decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "incident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("obligation", sa.String(length=64), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("decided_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_report_decisions_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_decisions")),
    )
    with op.batch_alter_table("report_decisions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_report_decisions_incident", ["incident_id", "obligation", "id"], unique=False
        )

    op.create_table(
        "report_submissions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "incident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("obligation", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("submitted_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", mailveil.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("snapshot_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_report_submissions_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_submissions")),
    )
    with op.batch_alter_table("report_submissions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_report_submissions_incident", ["incident_id", "obligation", "phase"], unique=False
        )

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subdivision", sa.String(length=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("subdivision")

    with op.batch_alter_table("report_submissions", schema=None) as batch_op:
        batch_op.drop_index("ix_report_submissions_incident")

    op.drop_table("report_submissions")
    with op.batch_alter_table("report_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_report_decisions_incident")

    op.drop_table("report_decisions")
    op.drop_table("incident_assessments")
    op.drop_table("report_controller")
