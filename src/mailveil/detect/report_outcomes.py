"""What an abuse report shows, decided from the relay's records rather than from the report.

A report is what a customer says about a message. The message itself may be forwarded,
rewritten, pasted or invented, so the report never names a culprit on its own word:

``complaint``
    The reported message is one the relay itself delivered from the alias's principal,
    recognised by the relay's own records (``relay_records``: its Message-ID, its VERP
    token, or the forward's visible From and To matched to the relay's deliveries). The
    principal had the alias legitimately: a complaint about its mail, never a leak.
``attributed``
    The message reached an alias and the relay recorded a stranger writing to it (the
    ``stranger_at_alias`` entry it ``corroborates``). The accusation, if any, rests on that
    entry and is decided by the ledger scan with its own rules (``attribution``); the report
    adds no second one.
``unconfirmed``
    It names an alias, or claims to come from the relay, but the relay has no record of
    such mail: a claim, kept with its reason.
``real_address``
    It reached the customer's own address, which the relay never sees: kept for guilt
    ranking (statistical), with the sender only *claimed*.
``unattributed``
    None of the above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Alias, Customer
from mailveil.detect.intake_model import ReportParse
from mailveil.detect.relay_records import RelayRecord, find_by_visible_fields, find_relayed
from mailveil.errors import InvalidInput
from mailveil.ledger.models import LedgerEntry
from mailveil.relay.messages import VerpKey
from mailveil.vault import Vault


@dataclass(frozen=True)
class Decision:
    outcome: str
    reason: str
    alias: str | None = None
    corroborates: int | None = None  # the stranger_at_alias entry the report points to
    complaint_about: int | None = None  # the principal whose ordinary mail it is
    relay: RelayRecord | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_facts(self) -> dict[str, Any]:
        out = dict(self.facts)
        if self.relay is not None:
            out["relay_record"] = self.relay.to_detail()
        if self.complaint_about is not None:
            out["complaint_about"] = f"principal:{self.complaint_about}"
        if self.corroborates is not None:
            out["corroborates_entry"] = self.corroborates
        return out


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().strip(">").lower()[:255] or None


def customer_by_address(session: Session, vault: Vault, address: str | None) -> Customer | None:
    if not address:
        return None
    try:
        bidx = vault.blind_indexes(address)
    except InvalidInput:
        return None
    return session.scalar(select(Customer).where(Customer.address_bidx.in_(bidx)).limit(1))


def original_sender(parse: ReportParse) -> str | None:
    original = parse.original
    if original is not None:
        if original.sender is not None and original.sender.address:
            return original.sender.address
        if original.return_path:
            return original.return_path
    if parse.feedback is not None:
        return parse.feedback.original_mail_from
    return None


def recipients(parse: ReportParse) -> list[str]:
    out: list[str] = []
    if parse.original is not None:
        out.extend(parse.original.recipients)
    if parse.feedback is not None:
        out.extend(parse.feedback.original_rcpt_to)
    return list(dict.fromkeys(a.strip().strip("<>").lower() for a in out if a and "@" in a))


def _relay_record(
    session: Session, settings: Settings, parse: ReportParse, verp_key: VerpKey | None
) -> RelayRecord | None:
    original = parse.original
    return_paths = [original.return_path if original else None]
    if parse.feedback is not None:
        return_paths.append(parse.feedback.original_mail_from)
    found = find_relayed(
        session,
        relay_domain=settings.relay_domain,
        verp_key=verp_key,
        message_ids=[original.message_id if original else None],
        return_paths=return_paths,
    )
    if found is not None:
        return found
    return find_by_visible_fields(
        session,
        relay_domain=settings.relay_domain,
        sender=original_sender(parse),
        recipients=recipients(parse),
        date=original.date if original else None,
    )


def _stranger_entry_at(session: Session, alias: str) -> int | None:
    return session.scalar(
        select(LedgerEntry.seq)
        .where(LedgerEntry.alias == alias, LedgerEntry.kind == "stranger_at_alias")
        .order_by(LedgerEntry.seq.desc())
        .limit(1)
    )


def decide(
    session: Session,
    settings: Settings,
    vault: Vault,
    parse: ReportParse,
    reporter: Customer | None,
    verp_key: VerpKey | None,
) -> Decision:
    """The report's outcome (module docstring). Reads only; files nothing."""
    if parse.outcome == "rejected":
        return Decision("rejected", parse.detail)
    if parse.outcome != "found":
        return Decision("no_original", parse.detail)
    relay_domain = settings.relay_domain.lower()
    record = _relay_record(session, settings, parse, verp_key)
    if record is not None:
        basis = ", ".join(record.basis)
        if record.from_principal:
            return Decision(
                "complaint",
                f"the relay delivered this message from principal {record.principal_id} "
                f"(recognised by {basis}): ordinary mail, not a leak",
                alias=record.alias,
                complaint_about=record.principal_id,
                relay=record,
            )
        if record.stranger_entry is not None:
            return Decision(
                "attributed",
                f"a stranger's message the relay delivered with a warning (ledger entry "
                f"{record.stranger_entry}, recognised by {basis})",
                alias=record.alias,
                corroborates=record.stranger_entry,
                relay=record,
            )
        return Decision(
            "unattributed",
            f"a customer's own message the relay carried to a principal ({basis})",
            relay=record,
        )
    suffix = "@" + relay_domain
    named = recipients(parse)
    for address in named:
        if not address.endswith(suffix):
            continue
        alias = session.scalar(select(Alias).where(Alias.address == address))
        if alias is None or (reporter is not None and alias.customer_id != reporter.id):
            continue
        entry = _stranger_entry_at(session, alias.address)
        if entry is not None:
            return Decision(
                "attributed",
                f"the relay recorded a stranger's mail to this alias (ledger entry {entry})",
                alias=alias.address,
                corroborates=entry,
            )
        return Decision(
            "unconfirmed",
            "the report names an alias, but the relay has no record of anyone but its "
            "principal writing to it: the report alone is a claim",
            alias=alias.address,
        )
    if domain_of(original_sender(parse)) == relay_domain:
        return Decision(
            "unconfirmed",
            "the message claims to come from the relay, which has no record of it",
        )
    if reporter is not None:
        for address in named:
            found = customer_by_address(session, vault, address)
            if found is not None and found.id == reporter.id:
                return Decision(
                    "real_address",
                    "mail to the customer's own address: kept for guilt ranking; its "
                    "sender is only claimed",
                )
    return Decision("unattributed", "the original names neither an alias nor the reporter")


__all__ = [
    "Decision",
    "customer_by_address",
    "decide",
    "domain_of",
    "original_sender",
    "recipients",
]
