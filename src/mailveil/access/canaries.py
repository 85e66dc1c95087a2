"""Canaries: planted customers minted for one principal, mixed into that principal's lists.

A canary is an ordinary ``customers`` row (``is_canary`` set, a real address on
``canary_domain``, which the operator routes to mailveil) plus a ``canaries`` row naming the
principal it was made for. Nothing an employee sees tells it apart: its external id is made
in the shape of a real customer's of the same country (digits redrawn), it sorts among real
rows by that id, and its alias comes from the same minting. Any mail to it, or to its alias,
is a leak that names the principal (the detection area reads the ``canaries`` table).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.access.models import Canary
from mailveil.config import Settings
from mailveil.contacts.customers import create_customer
from mailveil.contacts.disclosures import existing_aliases, mint_aliases
from mailveil.contacts.models import Customer, Principal
from mailveil.db.base import utcnow
from mailveil.errors import Duplicate
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.vault import Vault

_DIGITS = "0123456789"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = _LOWER.upper()


def _redraw(template: str, letters_too: bool) -> str:
    out = []
    for position, ch in enumerate(template):
        if ch.isdigit():
            out.append(secrets.choice(_DIGITS))
        elif letters_too and position > 0 and ch in _LOWER:
            out.append(secrets.choice(_LOWER))
        elif letters_too and position > 0 and ch in _UPPER:
            out.append(secrets.choice(_UPPER))
        else:
            out.append(ch)
    return "".join(out)


def _sample_external_id(session: Session) -> str | None:
    """A random real customer's external id: its shape is what a canary copies.

    Each probe is one rowid seek (min and max asked apart: SQLite reads a lone min() or
    max() off the index end; no ORDER BY random(), no filter that could scan the table)."""
    low = session.scalar(select(func.min(Customer.id)))
    high = session.scalar(select(func.max(Customer.id)))
    if low is None or high is None:
        return None
    for _ in range(16):
        start = low + secrets.randbelow(high - low + 1)
        row = session.execute(
            select(Customer.external_id, Customer.is_canary)
            .where(Customer.id >= start)
            .order_by(Customer.id)
            .limit(1)
        ).first()
        if row is not None and not row[1]:
            return str(row[0])
    return None


def external_id_like(session: Session, country: str) -> str:
    """A fresh external id in the shape of a real customer's (ids rarely vary by country;
    ``country`` is kept for callers and a future per-country shape)."""
    del country
    template = _sample_external_id(session) or "c-00000000"
    letters_too = sum(ch.isdigit() for ch in template) < 4
    for _ in range(16):
        candidate = _redraw(template, letters_too)
        taken = session.scalar(select(Customer.id).where(Customer.external_id == candidate))
        if taken is None and candidate != template:
            return candidate
    return f"{template}{secrets.randbelow(10**6):06d}"


def plant(
    session: Session,
    *,
    settings: Settings,
    vault: Vault,
    ledger: Ledger,
    principal_id: int,
    country: str,
    count: int,
    actor: str = "system",
) -> list[Customer]:
    """Mint ``count`` new canaries of ``country`` for one principal. Does not commit."""
    made: list[Customer] = []
    events: list[Event] = []
    for _ in range(count):
        for _attempt in range(8):
            external_id = external_id_like(session, country)
            local = "".join(secrets.choice(_LOWER + _DIGITS) for _ in range(14))
            try:
                customer = create_customer(
                    session,
                    vault,
                    external_id=external_id,
                    email=f"{local}@{settings.canary_domain}",
                    country=country,
                    is_canary=True,
                )
            except Duplicate:  # a concurrent minting took the id: draw again
                continue
            break
        else:
            raise RuntimeError("could not mint a unique canary")
        session.add(
            Canary(
                customer_id=customer.id,
                principal_id=principal_id,
                country=country,
                created_at=utcnow(),
            )
        )
        made.append(customer)
        detail = {"principal": f"principal:{principal_id}", "country": country}
        events.append(Event("canary_planted", actor, f"customer:{customer.id}", detail=detail))
    session.flush()
    ledger.append(session, events)
    return made


def canaries_of(
    session: Session, principal_id: int, countries: Iterable[str] | None = None
) -> list[Customer]:
    stmt = (
        select(Customer)
        .join(Canary, Canary.customer_id == Customer.id)
        .where(Canary.principal_id == principal_id, Customer.deleted_at.is_(None))
    )
    if countries is not None:
        stmt = stmt.where(Canary.country.in_(sorted(set(countries))))
    return list(session.scalars(stmt.order_by(Customer.external_id)))


def ensure_canaries(
    session: Session,
    *,
    settings: Settings,
    vault: Vault,
    ledger: Ledger,
    principal_id: int,
    countries: Iterable[str],
) -> list[Customer]:
    """The principal's canaries for these countries, minting up to ``canaries_per_country``."""
    wanted = sorted(set(countries))
    have = canaries_of(session, principal_id, wanted)
    per_country: dict[str, int] = {}
    for customer in have:
        per_country[customer.country] = per_country.get(customer.country, 0) + 1
    for country in wanted:
        missing = settings.canaries_per_country - per_country.get(country, 0)
        if missing > 0:
            have.extend(
                plant(
                    session,
                    settings=settings,
                    vault=vault,
                    ledger=ledger,
                    principal_id=principal_id,
                    country=country,
                    count=missing,
                )
            )
    return sorted(have, key=lambda c: c.external_id)


def disclose_canaries(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    principal: Principal,
    canaries: Sequence[Customer],
    purpose: str,
    actor: str,
) -> dict[int, tuple[str, str]]:
    """Aliases of canaries for their principal, minted like any alias and ledgered as
    disclosures marked ``canary`` (blast-radius and access-log queries leave them out)."""
    pairs = {(c.id, principal.id) for c in canaries}
    existing = existing_aliases(session, pairs)
    wanted = {p: principal.display_name for p in pairs if p not in existing}
    if wanted:
        mint_aliases(session, settings, wanted, existing, utcnow())
    events = []
    out: dict[int, tuple[str, str]] = {}
    for customer in canaries:
        address, reverse, revoked = existing[(customer.id, principal.id)]
        if revoked:
            continue
        out[customer.id] = (address, reverse)
        detail = {"principal": f"principal:{principal.id}", "canary": True}
        events.append(
            Event("disclosure", actor, f"customer:{customer.id}", address, purpose, None, detail)
        )
    ledger.append(session, events)
    return out


__all__ = [
    "canaries_of",
    "disclose_canaries",
    "ensure_canaries",
    "external_id_like",
    "plant",
]
