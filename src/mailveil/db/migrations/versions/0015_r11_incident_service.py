"""The incident-response service principal exists from the start: it owns the breach-notice
template, and operators register their own version of that template (owner
``incident-response``) before the first notice round. Until now only the first
``POST /v1/incidents/{id}/notices`` created it, so registering a template earlier failed
with "no service with external id 'incident-response'" (branch r11-anomaly).

Idempotent: a database where a notice round already created the principal keeps it as is.

Revision ID: 0015_r11_incident_service
Revises: 0014_r16_relay
Create Date: 2026-12-06 23:10:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import mailveil.db.base

revision: str = "0015_r11_incident_service"
down_revision: str | None = "0014_r16_relay"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same values mailveil.incidents.notices creates it with (kept literal: a migration
# must not change when application code does).
KIND, EXTERNAL_ID, DISPLAY_NAME = "service", "incident-response", "Incident response"

principals = sa.table(
    "principals",
    sa.column("kind", sa.String),
    sa.column("external_id", sa.String),
    sa.column("display_name", sa.String),
    sa.column("status", sa.String),
    sa.column("attributes", sa.JSON),
    sa.column("created_at", mailveil.db.base.UTCDateTime(timezone=True)),
    sa.column("updated_at", mailveil.db.base.UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    conn = op.get_bind()
    found = conn.execute(
        sa.select(sa.func.count())
        .select_from(principals)
        .where(principals.c.kind == KIND, principals.c.external_id == EXTERNAL_ID)
    ).scalar()
    if found:
        return
    now = datetime.now(UTC)
    conn.execute(
        principals.insert().values(
            kind=KIND,
            external_id=EXTERNAL_ID,
            display_name=DISPLAY_NAME,
            status="active",
            attributes={"templates": []},
            created_at=now,
            updated_at=now,
        )
    )


def downgrade() -> None:
    # The principal may own templates and sends by now: it stays (data, not schema).
    pass
