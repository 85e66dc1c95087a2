"""Per-employee hourly and daily limits on customers received, decided by Cedar.

The counter is charged first and checked after (``charge`` is one atomic upsert that returns
the new totals): two concurrent requests of one employee cannot both slip under the limit,
because the second sees the first's charge; a refused request is rolled back, charge and all.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mailveil.access.models import EmployeeUsage
from mailveil.access.refusals import LimitExceeded
from mailveil.config import Settings
from mailveil.contacts.models import Principal
from mailveil.policy.engine import PolicyEngine
from mailveil.policy.facts import list_input, principal_entity_of

_usage = cast(Table, EmployeeUsage.__table__)


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def charge(session: Session, principal_id: int, rows: int, now: datetime) -> tuple[int, int]:
    """Add ``rows`` to this hour's counter; the totals this hour and over 24 hours, after."""
    hour = hour_of(now)
    make = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = make(_usage).values(principal_id=principal_id, hour=hour, rows=rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["principal_id", "hour"], set_={"rows": _usage.c.rows + rows}
        )
    )
    totals = session.execute(
        select(
            func.coalesce(func.sum(EmployeeUsage.rows).filter(EmployeeUsage.hour == hour), 0),
            func.coalesce(func.sum(EmployeeUsage.rows), 0),
        ).where(EmployeeUsage.principal_id == principal_id, EmployeeUsage.hour > hour - 24)
    ).one()
    return int(totals[0]), int(totals[1])


def enforce_limits(
    session: Session,
    settings: Settings,
    policy: PolicyEngine,
    employee: Principal,
    rows: int,
    now: datetime,
    *,
    purpose: str,
) -> tuple[int, int]:
    """Charge ``rows`` and ask Cedar whether they fit; LimitExceeded if not."""
    used_hour, used_day = charge(session, employee.id, rows, now)
    # Uncached: the counters make every input new; memoising them would evict useful ones.
    decision = policy.decide_uncached(
        list_input(
            principal_entity_of(employee),
            purpose=purpose,
            requested=rows,
            used_hour=used_hour - rows,
            used_day=used_day - rows,
            hour_limit=settings.employee_rows_per_hour,
            day_limit=settings.employee_rows_per_day,
        )
    )
    if not decision.allowed:
        raise LimitExceeded(
            decision.reason,
            actor=f"principal:{employee.id}",
            facts={
                "requested": rows,
                "used_hour": used_hour - rows,
                "used_day": used_day - rows,
                "policies": list(decision.policy_ids),
            },
        )
    return used_hour, used_day


__all__ = ["charge", "enforce_limits", "hour_of"]
