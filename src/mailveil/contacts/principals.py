"""Principals: sellers, employees and services, with attributes checked per kind.

seller    ``sending_addresses`` (the seller's own mailboxes the relay accepts mail from) and
          ``sending_domains`` (domains all of whose addresses it accepts)
employee  ``team``, ``role``, ``region`` and ``manager`` (the manager's employee external id;
          its format is checked, not its existence, so teams can be loaded in any order)
service   ``templates``: the notification templates it owns
"""

from __future__ import annotations

from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.contacts.models import PRINCIPAL_KINDS, PRINCIPAL_STATUSES, Principal
from mailveil.db.base import utcnow
from mailveil.db.lookup import get_or_not_found, one_or_not_found
from mailveil.errors import Duplicate, InvalidInput

# delivery_address: where the relay delivers customers' replies (a seller falls back to its
# first sending address; an employee has none otherwise).
ATTRIBUTES = {
    "seller": ("sending_addresses", "sending_domains", "delivery_address"),
    "employee": ("team", "role", "region", "manager", "delivery_address"),
    "service": ("templates",),
}
MAX_LIST = 100


def _domain(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("each sending domain must be a domain name")
    try:
        valid = validate_email(f"postmaster@{value.strip()}", check_deliverability=False)
    except EmailNotValidError:
        raise InvalidInput("a sending domain is not a valid domain name") from None
    return (valid.ascii_domain or valid.domain).lower()


def _sender_address(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("each sending address must be text")
    try:
        valid = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise InvalidInput("a sending address is not a valid email address") from None
    # Lowercased whole: the relay compares senders case-insensitively.
    return f"{valid.local_part}@{(valid.ascii_domain or valid.domain)}".lower()


def _delivery(attributes: dict[str, Any]) -> dict[str, Any]:
    value = attributes.get("delivery_address")
    if value in (None, ""):
        return {}
    return {"delivery_address": _sender_address(value)}


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{what} must be a list")
    if len(value) > MAX_LIST:
        raise InvalidInput(f"{what} has more than {MAX_LIST} entries")
    return value


def validate_attributes(kind: str, attributes: Any, *, external_id: str = "") -> dict[str, Any]:
    """Attributes for ``kind``, normalised; unknown names are an error (typos stay visible)."""
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise InvalidInput("attributes must be an object")
    allowed = ATTRIBUTES[kind]
    for name in attributes:
        if name not in allowed:
            raise InvalidInput(
                f"unknown attribute {v.shown(name)} for a {kind} (allowed: {', '.join(allowed)})"
            )
    if kind == "seller":
        addresses = sorted(
            {
                _sender_address(a)
                for a in _list(attributes.get("sending_addresses"), "sending_addresses")
            }
        )
        domains = sorted(
            {_domain(d) for d in _list(attributes.get("sending_domains"), "sending_domains")}
        )
        return {
            "sending_addresses": addresses,
            "sending_domains": domains,
            **_delivery(attributes),
        }
    if kind == "employee":
        out: dict[str, Any] = {
            name: v.text(attributes.get(name), name, 100) for name in ("team", "role", "region")
        }
        manager = attributes.get("manager")
        if manager not in (None, ""):
            manager = v.external_id(manager, "manager")
            if manager == external_id:
                raise InvalidInput("an employee cannot be their own manager")
            out["manager"] = manager
        else:
            out["manager"] = None
        return {**out, **_delivery(attributes)}
    templates = v.slug_list(_list(attributes.get("templates"), "templates"), "templates")
    return {"templates": templates}


def create_principal(
    session: Session,
    *,
    kind: str,
    external_id: str,
    display_name: str = "",
    attributes: dict[str, Any] | None = None,
    status: str = "active",
) -> Principal:
    """Create a principal; Duplicate if (kind, external_id) exists. Flushes, does not commit."""
    kind = v.choice(kind, PRINCIPAL_KINDS, "kind")
    ext = v.external_id(external_id)
    principal = Principal(
        kind=kind,
        external_id=ext,
        display_name=v.text(display_name, "display_name", 200),
        status=v.choice(status, PRINCIPAL_STATUSES, "status"),
        attributes=validate_attributes(kind, attributes, external_id=ext),
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    existing = session.scalar(
        select(Principal.id).where(Principal.kind == kind, Principal.external_id == ext)
    )
    if existing is not None:
        raise Duplicate(f"a {kind} with external id {ext!r} already exists (principal {existing})")
    try:
        with session.begin_nested():
            session.add(principal)
    except IntegrityError:
        raise Duplicate(f"a {kind} with external id {ext!r} already exists") from None
    return principal


def get_principal(session: Session, principal_id: int) -> Principal:
    return get_or_not_found(session, Principal, principal_id, "principal")


def get_principal_by_external_id(session: Session, kind: str, external_id: str) -> Principal:
    kind = v.choice(kind, PRINCIPAL_KINDS, "kind")
    ext = v.external_id(external_id)
    stmt = select(Principal).where(Principal.kind == kind, Principal.external_id == ext)
    return one_or_not_found(session, stmt, f"{kind} with external id {ext!r}")


def update_principal(
    session: Session,
    principal_id: int,
    *,
    display_name: str | None = None,
    attributes: dict[str, Any] | None = None,
    status: str | None = None,
) -> Principal:
    """Change what is given; attributes are replaced as a whole. Flushes, does not commit."""
    principal = get_principal(session, principal_id)
    # Validate everything before touching the row, so a bad field changes nothing.
    new_name = None if display_name is None else v.text(display_name, "display_name", 200)
    new_status = None if status is None else v.choice(status, PRINCIPAL_STATUSES, "status")
    new_attrs = (
        None
        if attributes is None
        else validate_attributes(principal.kind, attributes, external_id=principal.external_id)
    )
    if new_name is not None:
        principal.display_name = new_name
    if new_status is not None:
        principal.status = new_status
    if new_attrs is not None:
        principal.attributes = new_attrs
    principal.updated_at = utcnow()
    session.flush()
    return principal


def list_principals(
    session: Session, *, kind: str | None = None, after_id: int | None = None, limit: int = 100
) -> list[Principal]:
    stmt = select(Principal)
    if kind is not None:
        stmt = stmt.where(Principal.kind == v.choice(kind, PRINCIPAL_KINDS, "kind"))
    if after_id is not None:
        stmt = stmt.where(Principal.id > after_id)
    return list(session.scalars(stmt.order_by(Principal.id).limit(v.page_limit(limit))))


def principal_view(principal: Principal) -> dict[str, Any]:
    return {
        "id": principal.id,
        "kind": principal.kind,
        "external_id": principal.external_id,
        "display_name": principal.display_name,
        "status": principal.status,
        "attributes": principal.attributes,
        "created_at": principal.created_at.isoformat(),
        "updated_at": principal.updated_at.isoformat(),
    }


__all__ = [
    "ATTRIBUTES",
    "create_principal",
    "get_principal",
    "get_principal_by_external_id",
    "list_principals",
    "principal_view",
    "update_principal",
    "validate_attributes",
]
