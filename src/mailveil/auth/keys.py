"""Issue, check and revoke API keys.

A token is ``mvk_<key_id>_<secret>``: the key id finds the row, the secret (32 random bytes)
is compared by its SHA-256. A fast hash is right here because the secret is high-entropy
random, not a password; a slow KDF would only slow every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.auth.models import ApiKey
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, Forbidden, InvalidInput, NotFound

TOKEN_PREFIX = "mvk"  # noqa: S105 - a label, not a secret
_KEY_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"


class Role(StrEnum):
    ADMIN = "admin"
    BACKEND = "backend"  # the marketplace's own backend
    SELLER = "seller"
    EMPLOYEE = "employee"
    INVESTIGATOR = "investigator"
    APPROVER = "approver"  # an employee who approves break-glass reveals of others
    SERVICE = "service"  # a notification job: sends to its customers' aliases via the relay


# Roles that send mail as one principal (SMTP AUTH) and must be bound to it.
PRINCIPAL_ROLES = {Role.SELLER: "seller", Role.EMPLOYEE: "employee", Role.SERVICE: "service"}
# Every role bound to a principal, and the kind it must be.
BOUND_ROLES = {**PRINCIPAL_ROLES, Role.APPROVER: "employee"}


class Unauthenticated(Forbidden):
    code = "unauthenticated"
    status = 401
    title = "Missing or invalid API key"


class LastAdminKey(Conflict):
    code = "last-admin-key"
    title = "The last active admin key cannot be revoked"


@dataclass(frozen=True)
class Caller:
    api_key_id: int
    key_id: str
    role: Role
    principal_id: int | None

    @property
    def actor(self) -> str:
        """How the ledger names this caller."""
        if self.principal_id is not None:
            return f"principal:{self.principal_id}"
        return f"apikey:{self.key_id}"


@dataclass(frozen=True)
class IssuedKey:
    token: str
    key: ApiKey


def _hash(secret: str) -> bytes:
    # Header values arrive as Latin-1 text: a non-ASCII secret must hash (and then fail to
    # match) like any other wrong secret, not raise.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


# Compared against when the key id is unknown or malformed, so every wrong credential costs
# one lookup and one hash comparison: the time taken does not tell which key ids exist.
_DUMMY_HASH = hashlib.sha256(b"mailveil: no such key").digest()
BAD_KEY = "unknown, revoked or malformed API key"


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def issue_key(
    session: Session,
    role: Role | str,
    *,
    principal_id: int | None = None,
    principal_kind: str | None = None,
    label: str = "",
) -> IssuedKey:
    """Create a key. The token is returned once and never stored."""
    try:
        role = Role(role)
    except ValueError as exc:
        raise InvalidInput(
            f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}"
        ) from exc
    wanted_kind = BOUND_ROLES.get(role)
    if wanted_kind is not None:
        if principal_id is None:
            raise InvalidInput(f"{_a(role.value)} key must be bound to {_a(wanted_kind)} principal")
        if principal_kind is not None and principal_kind != wanted_kind:
            raise Conflict(
                f"{_a(role.value)} key must be bound to {_a(wanted_kind)}, not {_a(principal_kind)}"
            )
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        key_id=key_id,
        secret_hash=_hash(secret),
        role=role.value,
        principal_id=principal_id,
        label=label[:200],
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return IssuedKey(token=f"{TOKEN_PREFIX}_{key_id}_{secret}", key=row)


def authenticate(session: Session, token: str | None) -> Caller:
    """The caller behind a bearer token, or Unauthenticated (one error for every failure)."""
    if not token:
        raise Unauthenticated("send 'Authorization: Bearer <api key>'")
    parts = token.split("_", 2)
    well_formed = len(parts) == 3 and parts[0] == TOKEN_PREFIX
    key_id, secret = (parts[1], parts[2]) if well_formed else ("", token)
    # Key ids are short ASCII; anything else cannot exist and is looked up as "" (no row).
    if len(key_id) > 64 or not key_id.isascii():
        key_id = ""
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    matches = hmac.compare_digest(
        row.secret_hash if row is not None else _DUMMY_HASH, _hash(secret)
    )
    if not well_formed or row is None or row.revoked_at is not None or not matches:
        raise Unauthenticated(BAD_KEY)
    return Caller(
        api_key_id=row.id, key_id=row.key_id, role=Role(row.role), principal_id=row.principal_id
    )


LAST_ADMIN_RECOVERY = (
    "if every admin key is lost, issue a new one on the server: "
    "`mailveil api-keys create --role admin` (with the same data directory and database)"
)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key; the last active admin key is refused (nobody could administer then)."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if row is None:
        raise NotFound(f"no API key {key_id}")
    if row.revoked_at is None and row.role == Role.ADMIN.value:
        # Lock every active admin key so two revocations at once cannot both see "another
        # admin remains" (PostgreSQL; SQLite serialises writers anyway).
        admins = session.scalars(
            select(ApiKey.id)
            .where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None))
            .with_for_update()
        ).all()
        if len(admins) <= 1:
            raise LastAdminKey(
                f"{key_id} is the last active admin key: issue another admin key first, "
                f"then revoke this one ({LAST_ADMIN_RECOVERY})"
            )
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def require_role(caller: Caller, *roles: Role) -> None:
    if caller.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(
            f"this needs one of the roles: {allowed}; the key has role {caller.role.value}"
        )
