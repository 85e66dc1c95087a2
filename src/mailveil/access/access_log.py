"""The customer-visible access log: who saw this customer's alias or real address, when,
and for what case or order, read from the ledger (the one record of disclosures and reveal
views). It names teams, not people, unless ``access_log_names_person`` is set; canaries,
and disclosures marked internal, are left out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Customer, Principal
from mailveil.errors import NotFound
from mailveil.ledger.models import LedgerEntry, from_time_us

SEEN_KINDS = {"disclosure": "alias", "reveal_viewed": "real_address"}
SCAN_BATCH = 500


@dataclass(frozen=True)
class AccessLogEntry:
    seq: int
    time: str
    what: str  # "alias" | "real_address"
    by_kind: str  # seller | employee | service
    by: str  # the team (or the seller's / service's name)
    person: str | None
    purpose: str | None
    ref: str | None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "seq": self.seq,
            "time": self.time,
            "what": self.what,
            "by_kind": self.by_kind,
            "by": self.by,
            "purpose": self.purpose,
            "ref": self.ref,
        }
        if self.person is not None:
            out["person"] = self.person
        return out


def access_log(
    session: Session,
    settings: Settings,
    customer_id: int,
    *,
    after_seq: int | None = None,
    limit: int = 100,
) -> tuple[list[AccessLogEntry], int | None]:
    """Up to ``limit`` entries, oldest first, and the cursor for the next page (or None)."""
    customer = session.get(Customer, customer_id)
    if customer is None or customer.is_canary:
        raise NotFound(f"no customer {customer_id}")
    subject = f"customer:{customer_id}"
    out: list[AccessLogEntry] = []
    principals: dict[int, Principal | None] = {}
    cursor = after_seq
    while len(out) < limit:
        stmt = (
            select(
                LedgerEntry.seq,
                LedgerEntry.time_us,
                LedgerEntry.kind,
                LedgerEntry.actor,
                LedgerEntry.purpose,
                LedgerEntry.ref,
                LedgerEntry.detail,
            )
            .where(LedgerEntry.subject == subject)
            .order_by(LedgerEntry.seq)
            .limit(SCAN_BATCH)
        )
        if cursor is not None:
            stmt = stmt.where(LedgerEntry.seq > cursor)
        batch = list(session.execute(stmt))
        if not batch:
            return out, None
        for seq, time_us, kind, actor, purpose, ref, detail_text in batch:
            cursor = seq
            what = SEEN_KINDS.get(kind)
            if what is None:
                continue
            detail = json.loads(detail_text)
            if detail.get("canary") or detail.get("internal"):
                continue
            who = detail.get("principal") if kind == "disclosure" else actor
            pid = _principal_id(who)
            if pid is None:
                continue
            if pid not in principals:
                principals[pid] = session.get(Principal, pid)
            principal = principals[pid]
            if principal is None:
                continue
            out.append(_entry(settings, seq, time_us, what, principal, detail, purpose, ref))
            if len(out) >= limit:
                return out, seq
    return out, cursor


def _principal_id(name: Any) -> int | None:
    if isinstance(name, str) and name.startswith("principal:"):
        tail = name.split(":", 1)[1]
        return int(tail) if tail.isdigit() else None
    return None


def _entry(
    settings: Settings,
    seq: int,
    time_us: int,
    what: str,
    principal: Principal,
    detail: dict[str, Any],
    purpose: str | None,
    ref: str | None,
) -> AccessLogEntry:
    if principal.kind == "employee":
        team = detail.get("team") or (principal.attributes or {}).get("team") or "customer support"
        by = str(team)
    else:
        by = principal.display_name or principal.external_id
    person = None
    if settings.access_log_names_person and principal.kind == "employee":
        person = principal.display_name or principal.external_id
    return AccessLogEntry(
        seq, from_time_us(time_us).isoformat(), what, principal.kind, by, person, purpose, ref
    )


__all__ = ["AccessLogEntry", "access_log"]
