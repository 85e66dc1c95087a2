"""Each employee's daily access volume (customers returned to them by lookups, lists and
exports, from the limits' hourly counters) beside their peers' (same team): what a
reviewer compares before reading an anomaly alert."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.models import EmployeeUsage
from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow


@dataclass
class EmployeeVolume:
    principal_id: int
    name: str
    team: str
    status: str
    days: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # per day
    peers: list[float] = field(default_factory=list)  # the team's median per day (others)
    peer_count: int = 0

    @property
    def total(self) -> int:
        return sum(self.rows)

    @property
    def peak_ratio(self) -> float | None:
        """The largest day against the peers' median that day (None: no peer activity)."""
        ratios = [r / p for r, p in zip(self.rows, self.peers, strict=True) if p > 0]
        return max(ratios, default=None)


def daily_volume(
    session: Session, *, days: int = 14, until: date | None = None
) -> list[EmployeeVolume]:
    """Every employee's rows per UTC day over the last ``days`` days, busiest first."""
    last = until or utcnow().date()
    first = last - timedelta(days=days - 1)
    names = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    first_hour = (first - date(1970, 1, 1)).days * 24
    per: dict[int, list[int]] = defaultdict(lambda: [0] * days)
    for pid, hour, rows in session.execute(
        select(EmployeeUsage.principal_id, EmployeeUsage.hour, EmployeeUsage.rows).where(
            EmployeeUsage.hour >= first_hour, EmployeeUsage.hour < first_hour + days * 24
        )
    ):
        per[pid][(hour - first_hour) // 24] += rows
    employees = list(session.scalars(select(Principal).where(Principal.kind == "employee")))
    teams: dict[str, list[int]] = defaultdict(list)
    for p in employees:
        teams[str((p.attributes or {}).get("team") or "")].append(p.id)
    out = []
    for p in employees:
        team = str((p.attributes or {}).get("team") or "")
        others = [o for o in teams[team] if o != p.id]
        peers = [
            float(statistics.median(per[o][d] for o in others)) if others else 0.0
            for d in range(days)
        ]
        out.append(
            EmployeeVolume(
                p.id,
                p.display_name or p.external_id,
                team or "(no team)",
                p.status,
                names,
                list(per[p.id]),
                peers,
                len(others),
            )
        )
    out.sort(key=lambda e: (-e.total, e.principal_id))
    return out


__all__ = ["EmployeeVolume", "daily_volume"]
