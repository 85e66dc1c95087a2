"""Sellers: each one's contact response time (p50, p95 over a window, "no response needed"
messages left out) and the trackers removed from their mail, from the relay's own records.
Sellers are named by id, external id and display name; never an address."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from mailveil.auth.keys import Role
from mailveil.console.sessions import Person
from mailveil.console.web import DbDep, Viewer, page
from mailveil.contacts.models import Principal
from mailveil.platform.response_times import all_sellers
from mailveil.platform.trackers import tracker_counts

router = APIRouter()
SeeDep = Annotated[Person, Depends(Viewer(Role.ADMIN, Role.INVESTIGATOR))]


@router.get("/sellers", response_class=HTMLResponse)
def sellers(request: Request, session: DbDep, person: SeeDep, days: int = 30) -> HTMLResponse:
    days = min(max(days, 1), 366)
    times = all_sellers(session, days=days)
    ids = [t.seller_id for t in times]
    names = {
        p.id: (p.external_id, p.display_name)
        for p in session.scalars(select(Principal).where(Principal.id.in_(ids)))
    }
    rows: list[dict[str, Any]] = [
        {
            "times": t,
            "external_id": names.get(t.seller_id, ("", ""))[0],
            "name": names.get(t.seller_id, ("", ""))[1],
            "trackers": tracker_counts(session, t.seller_id, days=days),
        }
        for t in times
    ]
    # Slowest first: the sellers a marketplace's team looks at.
    rows.sort(key=lambda r: -(r["times"].p95_seconds or 0.0))
    return page(request, session, person, "sellers.html", rows=rows, days=days)


__all__ = ["router"]
