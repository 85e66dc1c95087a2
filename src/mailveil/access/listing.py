"""An employee's lists and exports of customers: only that employee's aliases, decided per
row by Cedar (the same decision as a disclosure), limited per hour and day, salted with the
employee's canaries once a result has more than a few rows.

Rows are ordered by external id and paged by it (``after``), which is also where each canary
sorts: a canary lands on the page its external id falls in, and a re-run of the same list
gives the same canaries. Rows carry no internal ids (new canaries would stand out by them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.canaries import disclose_canaries, ensure_canaries
from mailveil.access.employees import acting_employee
from mailveil.access.limits import enforce_limits
from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.disclosures import DisclosureRequest, disclose_batch
from mailveil.contacts.models import Customer, SupportCase
from mailveil.db.base import utcnow
from mailveil.errors import InvalidInput
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.policy.engine import PolicyEngine
from mailveil.vault import Vault

Scope = Literal["assigned", "all"]
SCOPES = ("assigned", "all")


@dataclass(frozen=True, slots=True)
class ListedCustomer:
    """One row an employee sees: never an internal id, never a real address."""

    external_id: str
    country: str
    alias: str
    reverse_alias: str

    def to_dict(self) -> dict[str, str]:
        return {
            "external_id": self.external_id,
            "country": self.country,
            "alias": self.alias,
            "reverse_alias": self.reverse_alias,
        }


@dataclass
class EmployeeList:
    rows: list[ListedCustomer] = field(default_factory=list)
    next: str | None = None  # pass as ``after`` for the next page
    withheld: int = 0  # candidates policy did not allow (not shown, not counted)
    ledger_seq: int | None = None  # the list's summary entry


def _candidates(
    session: Session,
    employee_id: int,
    *,
    scope: str,
    country: str | None,
    after: str | None,
    limit: int,
) -> list[tuple[int, str, str]]:
    if scope == "assigned":
        # Driven from the employee's open cases (ix_support_cases_assignee_id), then sorted:
        # a correlated EXISTS under ORDER BY external_id walks every customer instead.
        stmt = (
            select(Customer.id, Customer.external_id, Customer.country)
            .select_from(SupportCase)
            .join(Customer, Customer.id == SupportCase.customer_id)
            .where(
                SupportCase.assignee_id == employee_id,
                SupportCase.status == "open",
                Customer.is_canary.is_(False),
                Customer.deleted_at.is_(None),
            )
            .group_by(Customer.id)  # two open cases of one customer: one row
        )
    else:
        stmt = select(Customer.id, Customer.external_id, Customer.country).where(
            Customer.is_canary.is_(False), Customer.deleted_at.is_(None)
        )
    if country is not None:
        stmt = stmt.where(Customer.country == country)
    if after is not None:
        stmt = stmt.where(Customer.external_id > after)
    rows = session.execute(stmt.order_by(Customer.external_id).limit(limit))
    return [(cid, ext, ctry) for cid, ext, ctry in rows]


def list_for_employee(
    session: Session,
    *,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    vault: Vault,
    employee_id: int | None,
    purpose: str = "support",
    scope: str = "assigned",
    country: str | None = None,
    after: str | None = None,
    limit: int = 100,
    export: bool = False,
) -> EmployeeList:
    """One page (or one export) of customers for an employee. Does not commit.

    Raises the access refusals (suspended, limits) for the shell to record; rows policy does
    not allow are left out and only counted (``withheld``) in the list's ledger summary.
    """
    employee = acting_employee(session, employee_id, what="customer lists")
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of: {', '.join(SCOPES)}")
    purpose = v.slug(purpose, "purpose")
    if country is not None:
        country = v.country(country)
    if after is not None:
        after = v.text(after, "after", 255, allow_empty=False)
    cap = settings.employee_export_max_rows if export else settings.page_size_max
    if not 1 <= limit <= cap:
        raise InvalidInput(f"limit must be between 1 and {cap}")
    actor = f"principal:{employee.id}"
    now = utcnow()

    candidates = _candidates(
        session,
        employee.id,
        scope=scope,
        country=country,
        after=after,
        limit=limit,
    )
    results = disclose_batch(
        session,
        settings=settings,
        policy=policy,
        ledger=ledger,
        requests=[DisclosureRequest(cid, employee.id, purpose) for cid, _, _ in candidates],
        actor=actor,
        ledger_denials=False,
    )
    out = EmployeeList()
    seen_countries: set[str] = set()
    for (_, ext, ctry), result in zip(candidates, results, strict=True):
        if result.allowed and result.alias and result.reverse_alias:
            out.rows.append(ListedCustomer(ext, ctry, result.alias, result.reverse_alias))
            seen_countries.add(ctry)
        else:
            out.withheld += 1
    if len(candidates) == limit:
        out.next = candidates[-1][1]

    planted = 0
    if len(out.rows) > settings.canary_min_rows and settings.canaries_per_country > 0:
        upper = out.next  # this page covers (after, upper]; the last page has no upper end
        canaries = [
            c
            for c in ensure_canaries(
                session,
                settings=settings,
                vault=vault,
                ledger=ledger,
                principal_id=employee.id,
                countries=[country] if country else seen_countries,
            )
            if (after is None or c.external_id > after)
            and (upper is None or c.external_id <= upper)
        ]
        aliases = disclose_canaries(
            session,
            settings=settings,
            ledger=ledger,
            principal=employee,
            canaries=canaries,
            purpose=purpose,
            actor=actor,
        )
        for c in canaries:
            if c.id in aliases:
                out.rows.append(ListedCustomer(c.external_id, c.country, *aliases[c.id]))
                planted += 1
        out.rows.sort(key=lambda r: r.external_id)

    enforce_limits(session, settings, policy, employee, len(out.rows), now, purpose=purpose)
    summary = {
        "rows": len(out.rows),
        "withheld": out.withheld,
        "canaries": planted,
        "scope": scope,
        "country": country,
        "export": export,
    }
    out.ledger_seq = ledger.append(
        session,
        [Event("employee_list", actor, None, None, purpose, None, summary)],
    )[0]
    return out


__all__ = ["SCOPES", "EmployeeList", "ListedCustomer", "list_for_employee"]
