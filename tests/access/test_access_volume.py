"""Daily access volume per employee against the median of their team's others."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from mailveil.access.models import EmployeeUsage
from mailveil.access.volume import daily_volume
from mailveil.contacts.principals import create_principal

DAY = date(2026, 11, 20)


def _hour(day: date, hour: int) -> int:
    return (day - date(1970, 1, 1)).days * 24 + hour


def test_each_employee_against_their_peers(session: Session) -> None:
    team = {"team": "support"}
    a = create_principal(session, kind="employee", external_id="e-a", attributes=team)
    b = create_principal(session, kind="employee", external_id="e-b", attributes=team)
    c = create_principal(session, kind="employee", external_id="e-c", attributes=team)
    loner = create_principal(session, kind="employee", external_id="e-l", attributes={"team": "x"})
    session.flush()
    for pid, hour, rows in ((a.id, 9, 40), (a.id, 10, 10), (b.id, 9, 20), (c.id, 9, 30)):
        session.add(EmployeeUsage(principal_id=pid, hour=_hour(DAY, hour), rows=rows))
    session.add(EmployeeUsage(principal_id=a.id, hour=_hour(DAY, 0) - 24 * 30, rows=999))
    session.flush()
    rows = {v.principal_id: v for v in daily_volume(session, days=3, until=DAY)}
    first = daily_volume(session, days=3, until=DAY)[0]
    assert first.principal_id == a.id  # busiest first
    assert rows[a.id].days == ["2026-11-18", "2026-11-19", "2026-11-20"]
    assert rows[a.id].rows == [0, 0, 50]  # the month-old hour is outside the window
    assert rows[a.id].peers == [0.0, 0.0, 25.0]  # median of b (20) and c (30)
    assert rows[a.id].peak_ratio == 2.0
    assert rows[loner.id].peer_count == 0 and rows[loner.id].peak_ratio is None
