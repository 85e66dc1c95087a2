"""Who is asking: the acting employee (active, of kind employee) and reporting lines."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.refusals import EmployeeSuspended, NotAnEmployee
from mailveil.contacts.models import Principal

MAX_CHAIN = 32  # managers followed upwards; a cycle or a deeper chain stops here


def acting_employee(session: Session, principal_id: int | None, *, what: str = "this") -> Principal:
    """The employee behind a caller, refused (and so ledgered) when suspended."""
    actor = f"principal:{principal_id}" if principal_id is not None else "unknown"
    principal = session.get(Principal, principal_id) if principal_id is not None else None
    if principal is None or principal.kind != "employee":
        raise NotAnEmployee(f"only an employee may do {what}", actor=actor)
    if principal.status != "active":
        raise EmployeeSuspended(
            f"employee {principal.id} is suspended and may not do {what}", actor=actor
        )
    return principal


def managers_of(session: Session, employee: Principal) -> list[str]:
    """External ids of the employee's managers, nearest first, as far as they are known."""
    chain: list[str] = []
    current = employee
    for _ in range(MAX_CHAIN):
        manager = (current.attributes or {}).get("manager")
        if not manager or manager in chain or manager == employee.external_id:
            break
        chain.append(str(manager))
        found = session.scalar(
            select(Principal).where(Principal.kind == "employee", Principal.external_id == manager)
        )
        if found is None:
            break
        current = found
    return chain


def in_reporting_line(session: Session, a: Principal, b: Principal) -> bool:
    """True when either manages the other, directly or through managers."""
    return b.external_id in managers_of(session, a) or a.external_id in managers_of(session, b)


__all__ = ["acting_employee", "in_reporting_line", "managers_of"]
