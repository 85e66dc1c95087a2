"""Who a sender is, as the relay records it in the ledger (signals name their sources by it).

``Sender`` is what the SMTP session knows; ``sender_identity`` adds what the message showed
(its From, SPF/DKIM/DMARC) in the shape the detection scan reads (``detect.scan``):
envelope_from, header_from, client_ip, helo, spf, spf_domain, spf_aligned, dkim
[{d, s, result, aligned, covers}], from_domain, dmarc. ``aligned``: the pass is aligned with
the From domain (DMARC); ``covers``: what the signature covers of the address the mail
arrived at (``rcpt``, ``other``, ``none``; see ``dkim_verify``). These are the facts from
which ``detect.attribution`` decides whether the sender's identity is authenticated or only
claimed. An address that is a customer's is recorded as ``customer:<id>``: a customer's real
address never goes into the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from mailveil.contacts.customers import find_customer_by_address
from mailveil.errors import InvalidInput
from mailveil.logs import scrub
from mailveil.relay.context import RelayContext
from mailveil.relay.sender_auth import SenderAuth, check_sender


@dataclass(frozen=True)
class Sender:
    """What the SMTP session knows about who is sending."""

    mail_from: str  # "" for the null sender
    client_ip: str
    helo: str
    principal_id: int | None = None  # from SMTP AUTH

    @property
    def actor(self) -> str | None:
        return f"principal:{self.principal_id}" if self.principal_id is not None else None


@dataclass(frozen=True)
class Known:
    """A customer the caller already has at hand: compared without a query."""

    bidx: bytes
    ref: str  # "customer:<id>"


def masked(session: Session | None, ctx: RelayContext, address: str, known: Known | None) -> str:
    """A stranger's address as recorded: itself, or ``customer:<id>`` if it is a customer's."""
    if not address or address == "<>":
        return ""
    try:
        indexes = ctx.runtime.vault.blind_indexes(address)
    except InvalidInput:
        return scrub(address, "")[:320]
    if known is not None and known.bidx in indexes:
        return known.ref
    if session is not None:
        other = find_customer_by_address(session, ctx.runtime.vault, address)
        if other is not None:
            return f"customer:{other.id}"
    return address[:320]


def sender_identity(
    session: Session | None,
    ctx: RelayContext,
    sender: Sender,
    *,
    known: Known | None = None,
    header_from: str | None = None,
    auth: SenderAuth | None = None,
) -> dict[str, Any]:
    """The ledger's record of a sender (module docstring)."""
    aligned = auth.dkim_aligned_domains if auth else ()
    return {
        "envelope_from": masked(session, ctx, sender.mail_from, known),
        "header_from": masked(session, ctx, header_from or "", known),
        "authenticated_principal": sender.actor,
        "client_ip": sender.client_ip,
        "helo": sender.helo[:255],
        "spf": auth.spf if auth else None,
        "spf_domain": auth.spf_domain if auth else None,
        "spf_aligned": auth.spf_aligned if auth else None,
        "dkim": [
            {
                "d": r.domain,
                "s": r.selector,
                "result": r.result,
                "aligned": r.result == "pass" and r.domain in aligned,
                "covers": r.coverage or None,
            }
            for r in (auth.dkim if auth else [])
        ][:10],
        "from_domain": auth.from_domain if auth else None,
        "dmarc": auth.dmarc_result if auth else None,
    }


def check_sender_of(
    ctx: RelayContext, sender: Sender, raw: bytes, rcpt: str | None = None
) -> SenderAuth:
    """SPF, DKIM and DMARC for ``raw`` as ``sender`` sent it; ``rcpt``: the address it came
    to, for what a DKIM signature covers of it (``dkim_verify``)."""
    return check_sender(
        raw,
        mail_from="" if sender.mail_from in ("", "<>") else sender.mail_from,
        client_ip=sender.client_ip,
        helo=sender.helo,
        resolver=ctx.resolver,
        rcpt=rcpt or None,
    )


def is_address_of(ctx: RelayContext, bidx: bytes, address: str) -> bool:
    """Is ``address`` (in any form the vault folds alike) the one with blind index ``bidx``?
    Compared without decrypting anything; an address the vault cannot read is not."""
    try:
        return bidx in ctx.runtime.vault.blind_indexes(address)
    except InvalidInput:
        return False


__all__ = [
    "Known",
    "Sender",
    "check_sender_of",
    "is_address_of",
    "masked",
    "sender_identity",
]
