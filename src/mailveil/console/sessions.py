"""Console sessions: who is signed in, as what, until when; their CSRF tokens; the console's
own secret (signing the short-lived sign-in cookie and the customers' embed links).

A session is opened from an API key (its role) or from an OIDC identity (roles from a claim,
bound to the employee principal the provider names). Every action a person takes is written
to the ledger as the session's ``actor``: the person's principal, or the key's id for an
admin or investigator key bound to nobody, never a shared operator name.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailveil.auth.keys import Role, Unauthenticated, authenticate
from mailveil.auth.models import ApiKey
from mailveil.config import Settings
from mailveil.console.models import ConsoleSession
from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow
from mailveil.errors import Forbidden
from mailveil.keyfiles import KeyFileError, read_secret, write_secret
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event

# The API's roles a person can hold in the console. Backend, seller and service keys are
# machines': they have no console.
CONSOLE_ROLES = (Role.ADMIN, Role.INVESTIGATOR, Role.APPROVER, Role.EMPLOYEE)


class SignInRefused(Forbidden):
    code = "sign-in-refused"
    title = "Sign-in refused"


@dataclass(frozen=True)
class Person:
    """The signed-in person, as every page and action sees them."""

    session_id: int
    method: str
    roles: frozenset[str]
    actor: str
    principal_id: int | None
    name: str
    csrf: str

    def has(self, *roles: Role) -> bool:
        return any(r.value in self.roles for r in roles)


def secret_path(settings: Settings) -> Path:
    return settings.keys_dir / "console-secret"


def console_secret(settings: Settings) -> bytes:
    """The console's 32-byte secret (created on first use, 0600 in the keys folder)."""
    path = secret_path(settings)
    if not path.exists():
        with contextlib.suppress(KeyFileError, FileExistsError):  # another process won
            write_secret(path, secrets.token_bytes(32))
    return read_secret(path)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def _csrf(secret: bytes) -> str:
    return hmac.new(secret, b"mailveil console csrf", hashlib.sha256).hexdigest()


def _open(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    *,
    method: str,
    subject: str,
    name: str,
    roles: list[str],
    actor: str,
    principal_id: int | None,
    api_key_id: int | None,
) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        ConsoleSession(
            token_hash=_digest(token),
            method=method,
            api_key_id=api_key_id,
            principal_id=principal_id,
            subject=subject[:255],
            name=name[:200],
            roles=sorted(roles),
            actor=actor,
            csrf_secret=secrets.token_bytes(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=settings.console_session_hours),
        )
    )
    session.flush()
    ledger.append(
        session,
        [Event("console_signin", actor, detail={"method": method, "roles": sorted(roles)})],
    )
    return token


def sign_in_with_key(session: Session, settings: Settings, ledger: Ledger, token: str) -> str:
    """A session for the person holding an API key of a console role; the session token."""
    try:
        caller = authenticate(session, token.strip())
    except Unauthenticated as exc:
        raise SignInRefused("unknown or revoked API key") from exc
    if caller.role not in CONSOLE_ROLES:
        raise SignInRefused(f"keys of role {caller.role.value} have no console")
    name = f"{caller.role.value} key {caller.key_id}"
    if caller.principal_id is not None:
        principal = session.get(Principal, caller.principal_id)
        if principal is None or principal.status != "active":
            raise SignInRefused("the key's principal is suspended")
        name = principal.display_name or principal.external_id
    return _open(
        session,
        settings,
        ledger,
        method="apikey",
        subject=caller.key_id,
        name=name,
        roles=[caller.role.value],
        actor=caller.actor,
        principal_id=caller.principal_id,
        api_key_id=caller.api_key_id,
    )


def sign_in_with_oidc(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    *,
    issuer: str,
    subject: str,
    principal_ref: str,
    granted: list[str],
    name: str,
) -> str:
    """A session for a person the OIDC provider vouched for: their console roles (the
    provider's claim), acting as the employee principal whose external id it names."""
    principal = session.scalar(
        select(Principal).where(
            Principal.kind == "employee", Principal.external_id == principal_ref
        )
    )
    if principal is None:
        raise SignInRefused(
            "your identity provider names no employee known to mailveil; ask an admin to "
            "add you as an employee principal"
        )
    if principal.status != "active":
        raise SignInRefused("your employee principal is suspended")
    known = {r.value for r in CONSOLE_ROLES}
    roles = sorted({r for r in granted if r in known})
    if not roles:
        raise SignInRefused("your identity provider gives you no mailveil console role")
    return _open(
        session,
        settings,
        ledger,
        method="oidc",
        subject=f"{issuer}#{subject}",
        name=name or principal.display_name or principal.external_id,
        roles=roles,
        actor=f"principal:{principal.id}",
        principal_id=principal.id,
        api_key_id=None,
    )


def current_person(session: Session, settings: Settings, token: str | None) -> Person | None:
    """The person behind a session cookie, or None (expired, idle, ended, key revoked)."""
    if not token:
        return None
    row = session.scalar(select(ConsoleSession).where(ConsoleSession.token_hash == _digest(token)))
    now = utcnow()
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    if row.last_seen_at + timedelta(minutes=settings.console_idle_minutes) <= now:
        return None
    if row.api_key_id is not None:
        key = session.get(ApiKey, row.api_key_id)
        if key is None or key.revoked_at is not None:
            return None
    if row.principal_id is not None:
        principal = session.get(Principal, row.principal_id)
        if principal is None or principal.status != "active":
            return None
    if (now - row.last_seen_at).total_seconds() > 60:  # one write a minute, not per request
        row.last_seen_at = now
    return Person(
        session_id=row.id,
        method=row.method,
        roles=frozenset(row.roles),
        actor=row.actor,
        principal_id=row.principal_id,
        name=row.name,
        csrf=_csrf(row.csrf_secret),
    )


def check_csrf(person: Person, submitted: str | None) -> None:
    if not submitted or not hmac.compare_digest(person.csrf, str(submitted)):
        raise Forbidden("the form's security token is missing or wrong; reload the page")


def sign_out(session: Session, ledger: Ledger, person: Person) -> None:
    done = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == person.session_id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    )
    if getattr(done, "rowcount", 0):
        ledger.append(session, [Event("console_signout", person.actor)])


__all__ = [
    "CONSOLE_ROLES",
    "Person",
    "SignInRefused",
    "check_csrf",
    "console_secret",
    "current_person",
    "sign_in_with_key",
    "sign_in_with_oidc",
    "sign_out",
]
