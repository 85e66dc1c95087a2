"""``GET /v1/customers/{id}/contact`` for employees: the alias for (customer, this employee),
decided by Cedar like any disclosure and counted against the employee's limits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.employees import acting_employee
from mailveil.access.limits import enforce_limits
from mailveil.access.refusals import UnknownCustomer
from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.disclosures import DisclosureResult, disclose
from mailveil.contacts.models import Customer
from mailveil.db.base import utcnow
from mailveil.ledger.append import Ledger
from mailveil.policy.engine import PolicyEngine


def find_customer_id(
    session: Session, actor: str, *, customer_id: int | None, external_id: str | None
) -> int:
    """The customer's id, or UnknownCustomer (recorded: walking ids is what guessing is)."""
    if external_id is not None:
        external_id = v.text(external_id, "external_id", 255, allow_empty=False)
        found = session.scalar(select(Customer.id).where(Customer.external_id == external_id))
        shown = f"external id {v.shown(external_id)}"
    else:
        row = session.get(Customer, customer_id) if customer_id is not None else None
        found = row.id if row is not None else None
        shown = f"id {customer_id}"
    if found is None:
        raise UnknownCustomer(
            f"no customer with {shown}", actor=actor, facts={"asked": shown[:300]}
        )
    return found


def contact_for_employee(
    session: Session,
    *,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    employee_id: int | None,
    customer_id: int | None = None,
    customer_external_id: str | None = None,
    purpose: str = "support",
    ref: str | None = None,
) -> DisclosureResult:
    """The employee's alias for one customer, or a denial (a result, already in the ledger:
    the caller commits either way). Raises the access refusals for the shell to record."""
    employee = acting_employee(session, employee_id, what="contact lookups")
    actor = f"principal:{employee.id}"
    cid = find_customer_id(
        session, actor, customer_id=customer_id, external_id=customer_external_id
    )
    enforce_limits(
        session, settings, policy, employee, 1, utcnow(), purpose=v.slug(purpose, "purpose")
    )
    return disclose(
        session,
        settings=settings,
        policy=policy,
        ledger=ledger,
        customer_id=cid,
        principal_id=employee.id,
        purpose=purpose,
        ref=ref,
        actor=actor,
    )


__all__ = ["contact_for_employee", "find_customer_id"]
