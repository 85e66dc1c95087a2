"""Aliases: minting, lookup, revocation and the investigator's report.

An alias local part is 14 characters drawn uniformly (``secrets``/``os.urandom``) from a
31-character lowercase alphabet without look-alikes (no 0, o, 1, l, i): 14 * log2(31) = 69.4
bits. A reverse alias is the same random part behind a readable prefix made from the
principal's display name ("acme-books.k7q..."); nothing in either is derived from the
customer's address.
"""

from __future__ import annotations

import functools
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Alias, Customer, Principal
from mailveil.db.base import utcnow
from mailveil.errors import InvalidInput, NotFound, Revoked
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.queries import entries_for_alias, entry_dict

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
LOCAL_CHARS = 14
ENTROPY_BITS = LOCAL_CHARS * math.log2(len(ALPHABET))
PREFIX_MAX = 24
# Bytes 0..247 map to ALPHABET[b % 31] (248 = 8 * 31, so each character is equally likely);
# bytes 248..255 are dropped. bytes.translate does the whole draw in C.
_KEEP = 8 * len(ALPHABET)
_TABLE = bytes(ord(ALPHABET[b % len(ALPHABET)]) if b < _KEEP else 0 for b in range(256))
_DROP = bytes(range(_KEEP, 256))


def random_locals(count: int) -> list[str]:
    """``count`` independent uniform local parts (a few urandom calls for the lot)."""
    need = count * LOCAL_CHARS
    chars = b""
    while len(chars) < need:
        # ~3 % of bytes are dropped; draw a little more than needed.
        chars += os.urandom((need - len(chars)) * 33 // 32 + 16).translate(_TABLE, _DROP)
    text = chars[:need].decode("ascii")
    return [text[i : i + LOCAL_CHARS] for i in range(0, need, LOCAL_CHARS)]


@functools.lru_cache(maxsize=65536)
def name_prefix(display_name: str) -> str:
    """A readable, ASCII-only slug of a display name ("Acme Books Ltd." -> "acme-books-ltd")."""
    ascii_name = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:PREFIX_MAX].strip("-")


def mint_pairs(settings: Settings, display_names: list[str]) -> list[tuple[str, str]]:
    """(alias, reverse alias) for each display name, on the relay domain."""
    domain = settings.relay_domain.lower()
    randoms = random_locals(2 * len(display_names))
    out = []
    for i, name in enumerate(display_names):
        prefix = name_prefix(name)
        reverse = f"{prefix}.{randoms[2 * i + 1]}" if prefix else randoms[2 * i + 1]
        out.append((f"{randoms[2 * i]}@{domain}", f"{reverse}@{domain}"))
    return out


def _clean(address: Any) -> str:
    if not isinstance(address, str) or not address.strip() or len(address) > 320:
        raise InvalidInput("alias must be an address on the relay domain")
    return address.strip().lower()


def lookup_alias(session: Session, address: str) -> Alias | None:
    """The alias row a principal writes to (revoked ones included: check ``revoked_at``)."""
    return session.scalar(select(Alias).where(Alias.address == _clean(address)))


def lookup_reverse_alias(session: Session, address: str) -> Alias | None:
    """The alias row behind a reverse alias (what a customer writes to)."""
    return session.scalar(select(Alias).where(Alias.reverse_address == _clean(address)))


def get_alias(session: Session, address: str) -> Alias:
    alias = lookup_alias(session, address)
    if alias is None:
        raise NotFound("no such alias")
    return alias


def alias_for_pair(session: Session, customer_id: int, principal_id: int) -> Alias | None:
    return session.scalar(
        select(Alias).where(Alias.customer_id == customer_id, Alias.principal_id == principal_id)
    )


def revoke_alias(
    session: Session,
    ledger: Ledger,
    *,
    address: str,
    reason: str,
    actor: str,
) -> Alias:
    """Revoke an alias (mail to it will be refused) and write it to the ledger.

    Does not commit. A revoked alias is never re-issued to its pair by ``disclose``.
    """
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise InvalidInput("reason must be 1-500 characters")
    if not isinstance(actor, str) or not actor or len(actor) > 255:
        raise InvalidInput("actor must be 1-255 characters")
    alias = get_alias(session, address)
    if alias.revoked_at is not None:
        raise Revoked(f"alias {alias.address} was already revoked")
    alias.revoked_at = utcnow()
    alias.revoked_reason = reason.strip()
    alias.revoked_by = actor
    session.flush()
    ledger.append(
        session,
        [
            Event(
                kind="alias_revoked",
                actor=actor,
                subject=f"customer:{alias.customer_id}",
                alias=alias.address,
                detail={
                    "principal": f"principal:{alias.principal_id}",
                    "reason": alias.revoked_reason,
                },
            )
        ],
    )
    return alias


def alias_view(alias: Alias) -> dict[str, Any]:
    return {
        "address": alias.address,
        "reverse_address": alias.reverse_address,
        "customer_id": alias.customer_id,
        "principal_id": alias.principal_id,
        "created_at": alias.created_at.isoformat(),
        "revoked_at": alias.revoked_at.isoformat() if alias.revoked_at else None,
        "revoked_reason": alias.revoked_reason,
        "revoked_by": alias.revoked_by,
    }


@dataclass
class AliasReport:
    """Who an alias was disclosed to, and everything the ledger says about it."""

    alias: dict[str, Any]
    customer: dict[str, Any]
    principal: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    next_after_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "customer": self.customer,
            "principal": self.principal,
            "history": self.history,
            "next_after_seq": self.next_after_seq,
        }


def alias_report(
    session: Session, address: str, *, after_seq: int | None = None, limit: int = 1000
) -> AliasReport:
    """For investigators: the pair behind an alias and its ledger history (paged by seq)."""
    alias = get_alias(session, address)
    customer = session.get(Customer, alias.customer_id)
    principal = session.get(Principal, alias.principal_id)
    if customer is None or principal is None:  # foreign keys make this unreachable
        raise NotFound("alias refers to a missing customer or principal")
    entries = entries_for_alias(session, alias.address, after_seq=after_seq, limit=limit)
    first_disclosed: datetime | None = None
    for entry in entries:
        if entry.kind == "disclosure":
            first_disclosed = entry.time
            break
    return AliasReport(
        alias={
            **alias_view(alias),
            "first_disclosed_at": first_disclosed.isoformat() if first_disclosed else None,
        },
        customer={"id": customer.id, "external_id": customer.external_id},
        principal={
            "id": principal.id,
            "kind": principal.kind,
            "external_id": principal.external_id,
            "display_name": principal.display_name,
            "status": principal.status,
        },
        history=[entry_dict(e) for e in entries],
        next_after_seq=entries[-1].seq if len(entries) == limit else None,
    )


__all__ = [
    "ALPHABET",
    "ENTROPY_BITS",
    "LOCAL_CHARS",
    "AliasReport",
    "alias_for_pair",
    "alias_report",
    "alias_view",
    "get_alias",
    "lookup_alias",
    "lookup_reverse_alias",
    "mint_pairs",
    "name_prefix",
    "random_locals",
    "revoke_alias",
]
