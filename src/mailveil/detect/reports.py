"""Abuse reports: a customer forwards the spam they got (to the abuse mailbox, or uploaded
through the marketplace's account page via the API); the intake finds the original message
in it, and the report is attributed:

- the original reached an **alias**: exact attribution, the alias names whom it was
  disclosed to (a signal, filed under that principal's incident);
- it reached the customer's **real address**: the report is kept for guilt ranking by its
  sender's domain, and once enough reporters make one principal's overlap improbable, a
  ranked signal names it (see ``ranking``).

A report only counts when the reporter is the customer: an API upload names the customer
from an authenticated backend session; a mailbox report must come from the customer's own
address with an aligned SPF/DKIM pass (DMARC). Anything else is stored as ``unverified``
and accuses no one. The reporter is only ever told that the report was received.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Alias, Customer
from mailveil.detect.intake import parse_report
from mailveil.detect.intake_model import IntakeLimits, ReportParse
from mailveil.detect.matching import SenderDirectory
from mailveil.detect.models import AbuseReport, Signal
from mailveil.detect.ranking import is_significant, rank_principals
from mailveil.detect.signals import record_signal
from mailveil.errors import InvalidInput, NotFound
from mailveil.ledger.append import append
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner
from mailveil.logs import scrub
from mailveil.vault import Vault

ACKNOWLEDGEMENT = (
    "Thank you: your report was received (reference R-{id}). We look into every report; "
    "for your privacy we do not share what we find."
)
MIN_REPORTERS = 5


@dataclass(frozen=True)
class MailboxAuth:
    """What the relay established about a report mailed to the abuse mailbox."""

    header_from: str
    dmarc_pass: bool  # SPF or DKIM passed, aligned with the From domain


@dataclass(frozen=True)
class ReportOutcome:
    report_id: int
    outcome: str  # attributed | real_address | unverified | unattributed | no_original | rejected
    verified: bool
    signal_id: int | None
    acknowledgement: str

    def to_dict(self) -> dict[str, Any]:
        # What an API caller (the marketplace, on the customer's behalf) is told.
        return {"report_id": self.report_id, "received": True, "message": self.acknowledgement}


def _domain(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().strip(">").lower()[:255] or None


def _customer_by_address(session: Session, vault: Vault, address: str | None) -> Customer | None:
    if not address:
        return None
    try:
        bidx = vault.blind_index(address)
    except InvalidInput:
        return None
    return session.scalar(select(Customer).where(Customer.address_bidx == bidx))


def _sender(parse: ReportParse) -> str | None:
    original = parse.original
    if original is not None:
        if original.sender is not None:
            return original.sender.address
        if original.return_path:
            return original.return_path
    if parse.feedback is not None:
        return parse.feedback.original_mail_from
    return None


def _recipients(parse: ReportParse) -> list[str]:
    out: list[str] = []
    if parse.original is not None:
        out.extend(parse.original.recipients)
    if parse.feedback is not None:
        out.extend(parse.feedback.original_rcpt_to)
    return list(dict.fromkeys(a.strip().strip("<>").lower() for a in out if a and "@" in a))


def _facts(parse: ReportParse, relay_domain: str) -> dict[str, Any]:
    """What is kept of the report: scrubbed of every address but relay aliases."""
    original = parse.original
    facts: dict[str, Any] = {
        "reason": parse.reason.value,
        "shape": parse.shape,
        "depth": parse.depth,
        "path": list(parse.path)[:20],
    }
    if original is not None:
        facts.update(
            completeness=original.completeness,
            message_id=scrub(original.message_id or "", relay_domain)[:300] or None,
            date=original.date.isoformat() if original.date else None,
            subject=scrub(original.subject or "", relay_domain)[:300] or None,
            received_ips=[h.ip for h in original.received if h.ip][:20],
            dkim_domains=sorted({d.domain for d in original.dkim if d.domain})[:10],
            authentication_results=[
                scrub(a, relay_domain)[:300] for a in original.authentication_results[:5]
            ],
        )
    if parse.feedback is not None:
        facts["feedback_type"] = parse.feedback.feedback_type
        facts["source_ip"] = parse.feedback.source_ip
    return facts


def submit_report(
    session: Session,
    *,
    settings: Settings,
    signer: CheckpointSigner,
    vault: Vault,
    raw: bytes,
    channel: str,
    reporter_customer_id: int | None = None,
    mailbox: MailboxAuth | None = None,
    limits: IntakeLimits | None = None,
) -> ReportOutcome:
    """Read, store and attribute one report. Does not commit. Never raises for bad input
    in the report itself (that is an outcome); raises NotFound for an unknown customer."""
    if channel not in ("api", "mailbox"):
        raise InvalidInput("channel must be api or mailbox")
    parse = parse_report(raw, limits=limits or IntakeLimits())
    reporter: Customer | None = None
    verification = "unverified"
    if reporter_customer_id is not None:
        reporter = session.get(Customer, reporter_customer_id)
        if reporter is None:
            raise NotFound(f"no customer {reporter_customer_id}")
        verification = "api-session"
    elif mailbox is not None:
        claimed = _customer_by_address(session, vault, mailbox.header_from)
        if claimed is not None and mailbox.dmarc_pass:
            reporter, verification = claimed, "dmarc-aligned"
        elif claimed is not None:
            verification = "from-customer-unauthenticated"
    verified = reporter is not None
    sender = _sender(parse)
    sender_customer = _customer_by_address(session, vault, sender)
    shown_sender = (
        f"customer:{sender_customer.id}" if sender_customer is not None else (sender or None)
    )
    row = AbuseReport(
        channel=channel,
        reporter_customer_id=reporter.id if reporter else None,
        verified=verified,
        verification=verification,
        outcome="pending",
        shape=parse.shape,
        sender=shown_sender[:320] if shown_sender else None,
        sender_domain=_domain(sender),
        raw_sha256=hashlib.sha256(raw).digest(),
        raw_bytes=len(raw),
        facts=_facts(parse, settings.relay_domain),
    )
    session.add(row)
    session.flush()
    outcome, alias = _attribute(session, settings, vault, parse, reporter)
    complained = _relayed_from(session, settings, sender)
    if complained is not None and outcome in ("real_address", "unattributed"):
        # Mail the relay itself delivered from a principal's reverse alias: a complaint about
        # that principal's messages, not evidence of a leak (it had the alias legitimately).
        outcome = "complaint"
        row.facts = {**row.facts, "complaint_about": f"principal:{complained}"}
    row.outcome = outcome if verified or outcome in ("no_original", "rejected") else "unverified"
    row.alias = alias
    subject = f"customer:{reporter.id}" if reporter else None
    detail = {
        "report": row.id,
        "channel": channel,
        "outcome": row.outcome,
        "verified": verified,
        "verification": verification,
        "shape": parse.shape,
        "sender_domain": row.sender_domain,
        "reason": parse.reason.value,
    }
    seq = append(
        session,
        [Event("abuse_report", subject or "unverified", subject, alias, None, None, detail)],
        settings,
        signer,
    )[0]
    signal: Signal | None = None
    if row.outcome == "attributed" and alias is not None:
        owner = session.scalar(select(Alias.principal_id).where(Alias.address == alias))
        directory = SenderDirectory.load(session)
        recipient, how = directory.match([sender], [d for d in row.facts.get("dkim_domains", [])])
        signal = record_signal(
            session,
            settings,
            signer,
            kind="abuse_report",
            confidence="exact",
            summary="a customer reported mail sent to the alias disclosed to this principal",
            source_principal_id=owner,
            recipient_principal_id=recipient,
            customer_id=reporter.id if reporter else None,
            alias=alias,
            ledger_seq=seq,
            evidence={"report": row.id, "matched_by": how, "sender": row.sender, **row.facts},
        )
    elif (
        row.outcome == "real_address"
        and row.sender_domain
        and row.sender_domain != settings.relay_domain.lower()
    ):
        signal = rank_sender(session, settings, signer, row.sender_domain, from_entry=seq)
    row.signal_id = signal.id if signal else None
    session.flush()
    return ReportOutcome(
        row.id, row.outcome, verified, row.signal_id, ACKNOWLEDGEMENT.format(id=row.id)
    )


def _relayed_from(session: Session, settings: Settings, sender: str | None) -> int | None:
    """The principal whose reverse alias sent this, if the sender is on the relay domain."""
    if not sender or _domain(sender) != settings.relay_domain.lower():
        return None
    address = sender.strip().strip("<>").lower()
    return session.scalar(select(Alias.principal_id).where(Alias.reverse_address == address))


def _attribute(
    session: Session,
    settings: Settings,
    vault: Vault,
    parse: ReportParse,
    reporter: Customer | None,
) -> tuple[str, str | None]:
    if parse.outcome == "rejected":
        return "rejected", None
    if parse.outcome != "found":
        return "no_original", None
    suffix = "@" + settings.relay_domain.lower()
    recipients = _recipients(parse)
    for address in recipients:
        if address.endswith(suffix):
            row = session.scalar(select(Alias).where(Alias.address == address))
            if row is not None and (reporter is None or row.customer_id == reporter.id):
                return "attributed", row.address
    if reporter is not None:
        for address in recipients:
            found = _customer_by_address(session, vault, address)
            if found is not None and found.id == reporter.id:
                return "real_address", None
    return "unattributed", None


def rank_sender(
    session: Session,
    settings: Settings,
    signer: CheckpointSigner,
    sender_domain: str,
    *,
    from_entry: int | None = None,
) -> Signal | None:
    """Rank principals for the verified real-address reports about one sender domain; file a
    ranked signal when the top one is beyond chance (once per principal and sender)."""
    reporters_ids = sorted(
        {
            r
            for r in session.scalars(
                select(AbuseReport.reporter_customer_id).where(
                    AbuseReport.sender_domain == sender_domain,
                    AbuseReport.outcome == "real_address",
                    AbuseReport.reporter_customer_id.is_not(None),
                )
            )
            if r is not None
        }
    )
    directory = SenderDirectory.load(session)
    sender_principal, _how = directory.match([f"x@{sender_domain}"])
    ranking = rank_principals(
        session, reporters_ids, sender_principal=sender_principal, real_addresses=True
    )
    if not is_significant(ranking, min_reporters=MIN_REPORTERS):
        return None
    top = ranking.ranked[0]
    for existing in session.scalars(
        select(Signal).where(
            Signal.kind == "abuse_report",
            Signal.confidence == "ranked",
            Signal.source_principal_id == top.principal_id,
        )
    ):
        if existing.evidence.get("sender_domain") == sender_domain:
            return existing
    return record_signal(
        session,
        settings,
        signer,
        kind="abuse_report",
        confidence="ranked",
        summary=(
            f"{top.overlap} of {ranking.reporters} customers reporting mail from {sender_domain} "
            f"were seen by {top.kind} {top.name} (p={top.p_value:.2e})"
        ),
        source_principal_id=top.principal_id,
        recipient_principal_id=sender_principal,
        score=top.score,
        evidence={
            "sender_domain": sender_domain,
            "ranking": ranking.to_dict(),
            "from_entry": from_entry,
        },
    )


__all__ = ["ACKNOWLEDGEMENT", "MailboxAuth", "ReportOutcome", "rank_sender", "submit_report"]
