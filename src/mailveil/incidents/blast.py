"""Blast radius: every customer whose alias or real address was disclosed to the culprit
principals, with what was exposed, when and by which route; canaries left out; counts by
country and region for the jurisdiction rules.

"Disclosed in the window" means the culprit held it during the window: an alias minted on or
before the window's end and not revoked before its start (a principal that leaks can leak
any alias it holds, not only the ones handed over that week), and a real address viewed
through a reveal on or before the window's end. Aliases are one row per (customer,
principal) and minted in the same transaction as their first disclosure entry, so the
aliases table answers for the ledger at index speed; reveals come from their requests.

The computation streams customers in id order (memory does not grow with the radius); the
same function serves a dry run before an incident is confirmed.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailveil.access.models import RevealRequest
from mailveil.contacts.models import Alias, Customer, Principal
from mailveil.detect.models import IncidentCulprit
from mailveil.errors import InvalidInput, NotFound
from mailveil.policy.facts import chunks

STREAM_BATCH = 20_000

# Country -> region, for counts under regional rules (GDPR: the EEA; US state laws: NA).
REGIONS: dict[str, str] = {
    **dict.fromkeys(
        [
            "AT",
            "BE",
            "BG",
            "CY",
            "CZ",
            "DE",
            "DK",
            "EE",
            "ES",
            "FI",
            "FR",
            "GR",
            "HR",
            "HU",
            "IE",
            "IS",
            "IT",
            "LI",
            "LT",
            "LU",
            "LV",
            "MT",
            "NL",
            "NO",
            "PL",
            "PT",
            "RO",
            "SE",
            "SI",
            "SK",
        ],
        "EEA",
    ),
    "GB": "UK",
    "CH": "CH",
    **dict.fromkeys(["US", "CA"], "NA"),
}


def region_of(country: str) -> str:
    return REGIONS.get(country.upper(), "other")


@dataclass(frozen=True, slots=True)
class Exposure:
    customer_id: int
    country: str
    deleted: bool
    alias: bool  # an alias was held by a culprit
    real_address: bool  # a culprit viewed the real address
    first_at: datetime
    routes: tuple[str, ...]  # e.g. "alias:principal:7", "reveal:12"


@dataclass
class BlastRadius:
    principals: tuple[int, ...]
    since: datetime | None
    until: datetime | None
    customers: int = 0
    alias_only: int = 0
    real_address: int = 0
    deleted: int = 0  # affected, but since deleted (no notice can reach them)
    by_country: Counter[str] = field(default_factory=Counter)
    by_region: Counter[str] = field(default_factory=Counter)
    # "US-CA": people whose subdivision is recorded (state laws apply by state).
    by_subdivision: Counter[str] = field(default_factory=Counter)
    sample: list[Exposure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "principals": list(self.principals),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "customers": self.customers,
            "alias_only": self.alias_only,
            "real_address": self.real_address,
            "deleted_since": self.deleted,
            "by_country": dict(sorted(self.by_country.items())),
            "by_region": dict(sorted(self.by_region.items())),
            "by_subdivision": dict(sorted(self.by_subdivision.items())),
            "sample": [
                {
                    "customer_id": e.customer_id,
                    "country": e.country,
                    "exposed": "real_address" if e.real_address else "alias",
                    "first_at": e.first_at.isoformat(),
                    "routes": list(e.routes),
                }
                for e in self.sample
            ],
        }


def culprits_of(session: Session, incident_id: int) -> tuple[int, ...]:
    """The incident's source principals (recipients received the data, they did not hold it
    from us; their own aliases are theirs to answer for in their own incident)."""
    rows = session.scalars(
        select(IncidentCulprit.principal_id).where(
            IncidentCulprit.incident_id == incident_id, IncidentCulprit.role == "source"
        )
    )
    return tuple(sorted(rows))


def exposures(
    session: Session,
    principals: Sequence[int],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Generator[Exposure, None, None]:
    """Every affected customer once, in id order (canaries left out)."""
    if not principals:
        raise InvalidInput("a blast radius needs at least one culprit principal")
    reveals: dict[int, list[tuple[datetime, str]]] = {}
    stmt = select(RevealRequest.customer_id, RevealRequest.granted_at, RevealRequest.id).where(
        RevealRequest.requester_id.in_(list(principals)), RevealRequest.views_used > 0
    )
    if until is not None:
        stmt = stmt.where(RevealRequest.granted_at <= until)
    for cid, granted, rid in session.execute(stmt):
        if granted is not None:  # a viewed reveal was granted; the guard is for the type
            reveals.setdefault(cid, []).append((granted, f"reveal:{rid}"))
    alias_stmt = (
        select(
            Alias.customer_id,
            Alias.principal_id,
            Alias.created_at,
            Customer.country,
            Customer.deleted_at,
        )
        .join(Customer, Customer.id == Alias.customer_id)
        .where(Alias.principal_id.in_(list(principals)), Customer.is_canary.is_(False))
        .order_by(Alias.customer_id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    if until is not None:
        alias_stmt = alias_stmt.where(Alias.created_at <= until)
    if since is not None:
        alias_stmt = alias_stmt.where(or_(Alias.revoked_at.is_(None), Alias.revoked_at >= since))
    current: list[Any] | None = None

    def emit(item: list[Any]) -> Exposure:
        cid, country, deleted, first, routes = item
        extra = reveals.pop(cid, [])
        for granted, route in extra:
            first = min(first, granted)
            routes.append(route)
        return Exposure(cid, country, deleted, True, bool(extra), first, tuple(routes))

    for cid, pid, created, country, deleted_at in session.execute(alias_stmt):
        if current is not None and current[0] != cid:
            yield emit(current)
            current = None
        if current is None:
            current = [cid, country, deleted_at is not None, created, []]
        current[3] = min(current[3], created)
        current[4].append(f"alias:principal:{pid}")
    if current is not None:
        yield emit(current)
    if reveals:  # real addresses viewed without an alias of the same culprit
        rest = sorted(reveals)
        for cid, country, deleted_at, canary in session.execute(
            select(Customer.id, Customer.country, Customer.deleted_at, Customer.is_canary).where(
                Customer.id.in_(rest)
            )
        ):
            if canary:
                continue
            items = reveals[cid]
            yield Exposure(
                cid,
                country,
                deleted_at is not None,
                False,
                True,
                min(t for t, _ in items),
                tuple(r for _, r in items),
            )


def _alias_filter(
    principals: Sequence[int], since: datetime | None, until: datetime | None
) -> list[Any]:
    where: list[Any] = [Alias.principal_id.in_(list(principals)), Customer.is_canary.is_(False)]
    if until is not None:
        where.append(Alias.created_at <= until)
    if since is not None:
        where.append(or_(Alias.revoked_at.is_(None), Alias.revoked_at >= since))
    return where


def blast_radius(
    session: Session,
    principals: Sequence[int],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sample: int = 20,
) -> BlastRadius:
    """Counts (computed in the database: one grouped pass over the culprits' aliases in
    customer order, from the covering index) and a sample; iterate ``exposures`` for every
    customer (notices do)."""
    known = set(session.scalars(select(Principal.id).where(Principal.id.in_(list(principals)))))
    missing = sorted(set(principals) - known)
    if missing:
        raise NotFound(f"unknown principal(s): {', '.join(map(str, missing))}")
    out = BlastRadius(tuple(sorted(principals)), since, until)
    stream = exposures(session, principals, since=since, until=until)
    out.sample = list(itertools.islice(stream, sample))
    stream.close()
    deleted_flag = Customer.deleted_at.is_not(None)
    grouped = session.execute(
        select(
            Customer.country,
            Customer.subdivision,
            deleted_flag,
            func.count(func.distinct(Alias.customer_id)),
        )
        .join(Customer, Customer.id == Alias.customer_id)
        .where(*_alias_filter(principals, since, until))
        .group_by(Customer.country, Customer.subdivision, deleted_flag)
    )
    with_alias = 0
    for country, subdivision, deleted, n in grouped:
        with_alias += int(n)
        out.by_country[country] += int(n)
        if subdivision:
            out.by_subdivision[f"{country}-{subdivision}"] += int(n)
        out.deleted += int(n) if deleted else 0
    # Real addresses viewed through reveals: few (break-glass), counted in Python.
    stmt = (
        select(
            RevealRequest.customer_id, Customer.country, Customer.subdivision, Customer.deleted_at
        )
        .join(Customer, Customer.id == RevealRequest.customer_id)
        .where(
            RevealRequest.requester_id.in_(list(principals)),
            RevealRequest.views_used > 0,
            Customer.is_canary.is_(False),
        )
    )
    if until is not None:
        stmt = stmt.where(RevealRequest.granted_at <= until)
    revealed = {
        cid: (country, sub, deleted_at is not None)
        for cid, country, sub, deleted_at in session.execute(stmt)
    }
    also_alias: set[int] = set()
    for part in chunks(sorted(revealed)):
        also_alias.update(
            session.scalars(
                select(Alias.customer_id)
                .join(Customer, Customer.id == Alias.customer_id)
                .where(Alias.customer_id.in_(part), *_alias_filter(principals, since, until))
            )
        )
    for cid, (country, sub, deleted) in revealed.items():
        if cid not in also_alias:
            out.by_country[country] += 1
            if sub:
                out.by_subdivision[f"{country}-{sub}"] += 1
            out.deleted += int(deleted)
    out.real_address = len(revealed)
    out.customers = with_alias + len(revealed) - len(also_alias)
    out.alias_only = out.customers - out.real_address
    for country, n in out.by_country.items():
        out.by_region[region_of(country)] += n
    return out


__all__ = [
    "REGIONS",
    "BlastRadius",
    "Exposure",
    "blast_radius",
    "culprits_of",
    "exposures",
    "region_of",
]
