"""A stranger's message that is a copy of mail the relay itself delivered.

A customer who received a principal's message through the relay holds the alias it was sent
to (in its To:) and a copy signed by the relay. Sending that copy back to the alias from
outside makes a "stranger at the alias" that only proves the customer kept their mail, not
that the principal leaked the alias. The relay recognises its own copies from what it minted
(``detect.relay_records``: its Message-IDs and VERP tokens) and from its own DKIM signature,
verified here against the relay's own keys (no DNS: the relay holds them), with what the
signature covers of the alias the copy arrived at.

The answer goes into the stranger's ledger entry as ``relay_copy`` (ids and the alias only),
where ``detect.attribution`` reads it: a copy addressed to the very alias it arrived at does
not count against that alias's principal.
"""

from __future__ import annotations

import time
from email.message import EmailMessage
from typing import Any

from sqlalchemy.orm import Session

from mailveil.detect.relay_records import find_relayed
from mailveil.relay.dkim import DkimSigner
from mailveil.relay.dkim_verify import verify_dkim
from mailveil.relay.dns import normalise_name
from mailveil.relay.messages import VerpKey

OWN_DKIM_DEADLINE = 2.0  # seconds; no DNS is asked, this only bounds dkimpy's own work


class OwnKeys:
    """A Resolver that answers the relay's own DKIM key records and nothing else."""

    def __init__(self, signer: DkimSigner) -> None:
        self.records = {normalise_name(k): v for k, v in signer.dns_records().items()}

    def txt(self, name: str) -> list[str]:
        found = self.records.get(normalise_name(name))
        return [found] if found else []

    def a(self, name: str) -> list[str]:
        return []

    def aaaa(self, name: str) -> list[str]:
        return []

    def mx(self, name: str) -> list[tuple[int, str]]:
        return []

    def ptr(self, name: str) -> list[str]:
        return []


def own_signature(raw: bytes, signer: DkimSigner, rcpt: str) -> tuple[bool, bool]:
    """(the relay's DKIM signature verifies, and one that verifies names ``rcpt`` in its
    signed To/Cc). Other domains' signatures are not looked at here."""
    results, _ = verify_dkim(
        raw,
        resolver=OwnKeys(signer),
        deadline=time.monotonic() + OWN_DKIM_DEADLINE,
        rcpt=rcpt,
    )
    own = [r for r in results if r.domain == signer.domain and r.result == "pass"]
    return bool(own), any(r.coverage == "rcpt" for r in own)


def _values(message: EmailMessage, name: str) -> list[str]:
    wanted = name.lower()
    return [str(v)[:2000] for k, v in message.raw_items() if k.lower() == wanted][:10]


def relay_copy(
    session: Session,
    *,
    relay_domain: str,
    verp_key: VerpKey,
    signer: DkimSigner,
    raw: bytes,
    message: EmailMessage,
    arrived_at: str,
) -> dict[str, Any] | None:
    """The ledger's ``relay_copy`` fact for a stranger's message, or None when it carries
    nothing the relay minted. ``to_this_alias``: the copy was addressed to the alias it
    arrived at (the relay's signature names it, or the relayed message was sent to it)."""
    signed, names_rcpt = own_signature(raw, signer, arrived_at)
    record = find_relayed(
        session,
        relay_domain=relay_domain,
        verp_key=verp_key,
        message_ids=_values(message, "Message-ID"),
        return_paths=_values(message, "Return-Path"),
        extra_basis=("relay-dkim",) if signed else (),
    )
    if record is None and not signed:
        return None
    out: dict[str, Any] = record.to_detail() if record else {"basis": ["relay-dkim"]}
    out["to_this_alias"] = names_rcpt or (record is not None and record.alias == arrived_at.lower())
    return out


__all__ = ["OwnKeys", "own_signature", "relay_copy"]
