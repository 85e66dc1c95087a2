"""Abuse reports: a customer forwards the spam they got (to the abuse mailbox, or uploaded
through the marketplace's account page via the API); the intake finds the original message
in it, and ``report_outcomes`` decides what it shows from the relay's own records:

- a message the relay delivered from the alias's principal: a **complaint** about that
  principal's ordinary mail, never a leak;
- mail to an **alias** that the relay recorded from a stranger: the report corroborates that
  ledger entry (the accusation, if any, is the ledger scan's, with its own rules);
- mail to an alias the relay has no record of: **unconfirmed**, a claim that accuses nobody;
- mail to the customer's **real address**: kept for guilt ranking by its sender's domain,
  and once enough reporters make one principal's overlap improbable, a ranked signal names
  it (``ranking``: statistical evidence; its sender is only claimed and names nobody).

A report only counts when the reporter is the customer: an API upload names the customer
from an authenticated backend session; a mailbox report must come from the customer's own
address with an aligned SPF/DKIM pass (DMARC). Anything else is stored as ``unverified`` and
accuses no one. When DNS could not answer for the sender, the report is kept ``pending`` and
re-checked later (``relay.abuse_intake.process_spool``), never counted as unverified for the
resolver's sake. Every report keeps the reason for its outcome. The reporter is only ever
told that the report was received.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Customer
from mailveil.db.base import utcnow
from mailveil.detect.intake import parse_report
from mailveil.detect.intake_model import IntakeLimits, ReportParse
from mailveil.detect.matching import SenderDirectory
from mailveil.detect.models import AbuseReport, Signal
from mailveil.detect.ranking import is_significant, rank_principals
from mailveil.detect.report_outcomes import (
    customer_by_address,
    decide,
    domain_of,
    original_sender,
)
from mailveil.detect.signals import record_signal
from mailveil.detect.strength import Piece
from mailveil.errors import InvalidInput, NotFound
from mailveil.keyfiles import KeyFileError
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.logs import scrub
from mailveil.relay.messages import VerpKey, VerpKeys
from mailveil.vault import Vault

ACKNOWLEDGEMENT = (
    "Thank you: your report was received (reference R-{id}). We look into every report; "
    "for your privacy we do not share what we find."
)
MIN_REPORTERS = 5
ReportOutcomeName = Literal[
    "pending",
    "complaint",
    "attributed",
    "unconfirmed",
    "real_address",
    "unattributed",
    "unverified",
    "no_original",
    "rejected",
]
OUTCOMES: tuple[str, ...] = get_args(ReportOutcomeName)


@dataclass(frozen=True)
class MailboxAuth:
    """What the relay established about a report mailed to the abuse mailbox."""

    header_from: str
    dmarc_pass: bool  # SPF or DKIM passed, aligned with the From domain
    # Why the sender could not be checked now (DNS did not answer), if so: the report is
    # kept pending and re-checked, not judged unverified.
    pending: str | None = None


@dataclass(frozen=True)
class ReportOutcome:
    report_id: int
    outcome: str  # one of OUTCOMES
    verified: bool
    signal_id: int | None
    acknowledgement: str

    def to_dict(self) -> dict[str, Any]:
        # What an API caller (the marketplace, on the customer's behalf) is told.
        return {"report_id": self.report_id, "received": True, "message": self.acknowledgement}


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


def _reporter(
    session: Session,
    vault: Vault,
    reporter_customer_id: int | None,
    mailbox: MailboxAuth | None,
) -> tuple[Customer | None, str]:
    """(the verified reporting customer or None, how it was verified or why not)."""
    if reporter_customer_id is not None:
        reporter = session.get(Customer, reporter_customer_id)
        if reporter is None:
            raise NotFound(f"no customer {reporter_customer_id}")
        return reporter, "api-session"
    if mailbox is None:
        return None, "unverified"
    claimed = customer_by_address(session, vault, mailbox.header_from)
    if claimed is None:
        return None, "unverified"
    if mailbox.dmarc_pass:
        return claimed, "dmarc-aligned"
    if mailbox.pending:
        return None, "pending-dns"
    return None, "from-customer-unauthenticated"


def verp_key_of(settings: Settings) -> VerpKey | None:
    """The relay's VERP keys (retired ones in their grace too), to recognise its bounce
    addresses in a report (None before the relay was ever set up)."""
    try:
        return VerpKeys.load(settings).accepted()
    except (KeyFileError, OSError):
        return None


def submit_report(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    vault: Vault,
    raw: bytes,
    channel: str,
    reporter_customer_id: int | None = None,
    mailbox: MailboxAuth | None = None,
    limits: IntakeLimits | None = None,
    verp_key: VerpKey | None = None,
) -> ReportOutcome:
    """Read, store and decide one report. Does not commit. Never raises for bad input
    in the report itself (that is an outcome); raises NotFound for an unknown customer."""
    if channel not in ("api", "mailbox"):
        raise InvalidInput("channel must be api or mailbox")
    parse = parse_report(raw, limits=limits or IntakeLimits())
    reporter, verification = _reporter(session, vault, reporter_customer_id, mailbox)
    sender = original_sender(parse)
    sender_customer = customer_by_address(session, vault, sender)
    shown_sender = (
        f"customer:{sender_customer.id}" if sender_customer is not None else (sender or None)
    )
    row = AbuseReport(
        channel=channel,
        reporter_customer_id=reporter.id if reporter else None,
        verified=reporter is not None,
        verification=verification,
        outcome="pending",
        shape=parse.shape,
        sender=shown_sender[:320] if shown_sender else None,
        sender_domain=domain_of(sender),
        raw_sha256=hashlib.sha256(raw).digest(),
        raw_bytes=len(raw),
        facts=_facts(parse, settings.relay_domain),
        checks=0,
    )
    session.add(row)
    session.flush()
    if verification == "pending-dns":
        assert mailbox is not None and mailbox.pending
        row.reason = scrub(f"the sender could not be checked yet: {mailbox.pending}", "")[:300]
        _ledger(session, ledger, row, parse)
        session.flush()
        return _outcome(row)
    return finish_report(
        session,
        settings=settings,
        ledger=ledger,
        vault=vault,
        row=row,
        parse=parse,
        reporter=reporter,
        verp_key=verp_key,
    )


def _ledger(
    session: Session,
    ledger: Ledger,
    row: AbuseReport,
    parse: ReportParse,
    **extra: Any,
) -> int:
    subject = (
        f"customer:{row.reporter_customer_id}" if row.reporter_customer_id is not None else None
    )
    detail = {
        "report": row.id,
        "channel": row.channel,
        "outcome": row.outcome,
        "verified": row.verified,
        "verification": row.verification,
        "shape": parse.shape,
        "sender_domain": row.sender_domain,
        "reason": parse.reason.value,
        **extra,
    }
    event = Event("abuse_report", subject or "unverified", subject, row.alias, None, None, detail)
    return ledger.append(session, [event])[0]


def _outcome(row: AbuseReport) -> ReportOutcome:
    return ReportOutcome(
        row.id, row.outcome, row.verified, row.signal_id, ACKNOWLEDGEMENT.format(id=row.id)
    )


def finish_report(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    vault: Vault,
    row: AbuseReport,
    parse: ReportParse,
    reporter: Customer | None,
    verp_key: VerpKey | None,
    **ledger_extra: Any,
) -> ReportOutcome:
    """Decide a stored report (``report_outcomes``), record it in the ledger and file what
    it supports: a ranked signal for real-address reports; a link to the stranger's signal
    for a corroborated alias. ``verp_key``: the relay's (read from the keys when None)."""
    if verp_key is None:
        verp_key = verp_key_of(settings)
    decision = decide(session, settings, vault, parse, reporter, verp_key)
    verified = reporter is not None
    row.reporter_customer_id = reporter.id if reporter else None
    row.verified = verified
    row.alias = decision.alias
    row.facts = {**row.facts, **decision.to_facts()}
    if verified or decision.outcome in ("no_original", "rejected"):
        row.outcome, row.reason = decision.outcome, decision.reason[:300]
    else:
        row.outcome = "unverified"
        row.reason = (
            f"the reporter is not proven to be the customer ({row.verification}); "
            f"the report would have been: {decision.outcome}"
        )[:300]
    seq = _ledger(session, ledger, row, parse, **ledger_extra)
    signal: Signal | None = None
    if row.outcome == "attributed" and decision.corroborates is not None:
        signal = session.scalar(select(Signal).where(Signal.ledger_seq == decision.corroborates))
    elif (
        row.outcome == "real_address"
        and row.sender_domain
        and row.sender_domain != settings.relay_domain.lower()
    ):
        signal = rank_sender(session, ledger, row.sender_domain, from_entry=seq)
    row.signal_id = signal.id if signal else None
    if decision.relay is not None and decision.relay.from_principal:
        # A complaint about a notification feeds its send's complaint gate.
        from mailveil.notify.feedback import record_complaint

        record_complaint(session, ledger, decision.relay.token, row.id)
    session.flush()
    return _outcome(row)


def recheck_report(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    vault: Vault,
    row: AbuseReport,
    raw: bytes,
    mailbox: MailboxAuth,
    expired: bool,
    verp_key: VerpKey | None = None,
) -> ReportOutcome:
    """Settle a ``pending`` report with a fresh check of its sender (``mailbox``): decided
    as any report once the check answers; judged ``unverified`` (with the reason) when it
    still cannot be checked and ``expired``; else left pending, counted. Does not commit."""
    if row.outcome != "pending":
        return _outcome(row)
    row.checks = (row.checks or 0) + 1
    row.checked_at = utcnow()
    reporter, verification = _reporter(session, vault, None, mailbox)
    if verification == "pending-dns" and not expired:
        row.reason = scrub(f"the sender could not be checked yet: {mailbox.pending}", "")[:300]
        session.flush()
        return _outcome(row)
    parse = parse_report(raw, limits=IntakeLimits())
    if verification == "pending-dns":
        verification = "dns-unanswered"
    row.verification = verification
    return finish_report(
        session,
        settings=settings,
        ledger=ledger,
        vault=vault,
        row=row,
        parse=parse,
        reporter=reporter,
        verp_key=verp_key,
        rechecked=row.checks,
    )


def expire_unreadable(session: Session, *, ledger: Ledger, row: AbuseReport) -> None:
    """A pending report whose kept bytes are gone (a crash between storing it and spooling
    it): judged unverified, with that reason, in the ledger. Does not commit."""
    row.outcome = "unverified"
    row.verification = "dns-unanswered"
    row.reason = "the sender could not be checked and the report's bytes were not kept"
    row.checked_at = utcnow()
    subject = f"customer:{row.reporter_customer_id}" if row.reporter_customer_id else None
    detail = {"report": row.id, "channel": row.channel, "outcome": row.outcome, "lost": True}
    event = Event("abuse_report", subject or "unverified", subject, None, None, None, detail)
    ledger.append(session, [event])
    session.flush()


def rank_sender(
    session: Session,
    ledger: Ledger,
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
    # Claimed only: it leaves the claimed sender's own customers out of the ranking (which
    # can only spare others) and is shown, never counted.
    sender_principal, sender_how = directory.match([f"x@{sender_domain}"])
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
    pieces = [
        Piece(
            "source", top.principal_id, "statistical", "guilt-ranking",
            f"{top.overlap} of {ranking.reporters} customers reporting mail from "
            f"{sender_domain} were seen by this principal (p={top.p_value:.2e}, "
            f"{ranking.candidates} principals scored, basis: {ranking.basis})",
            counted=True, weak=True, score=top.score, entry=from_entry,
        )
    ]  # fmt: skip
    if sender_principal is not None:
        pieces.append(
            Piece(
                "recipient", sender_principal, "claimed", "header-from",
                f"the reported mail names {sender_how}, but it reached real addresses the "
                "relay never saw: nothing proves who sent it",
                entry=from_entry,
            )
        )  # fmt: skip
    return record_signal(
        session,
        ledger,
        kind="abuse_report",
        confidence="ranked",
        summary=(
            f"{top.overlap} of {ranking.reporters} customers reporting mail from {sender_domain} "
            f"were seen by {top.kind} {top.name} (p={top.p_value:.2e})"
        ),
        score=top.score,
        evidence={
            "sender_domain": sender_domain,
            "ranking": ranking.to_dict(),
            "from_entry": from_entry,
        },
        pieces=pieces,
    )


__all__ = [
    "ACKNOWLEDGEMENT",
    "OUTCOMES",
    "MailboxAuth",
    "ReportOutcome",
    "ReportOutcomeName",
    "expire_unreadable",
    "finish_report",
    "rank_sender",
    "recheck_report",
    "submit_report",
    "verp_key_of",
]
