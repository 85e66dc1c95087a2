"""The abuse mailbox's intake: every report is taken, whatever the database or DNS is doing.

After a spam run the whole customer base may report at once, and a reporter turned away
rarely tries again. So:

1. The sender is checked first (SPF, DKIM, DMARC alignment of the report's From), outside
   any database transaction. When DNS does not answer, the report is stored **pending**
   with that reason (``detect.reports``) and its bytes are kept in the spool
   (``report_spool``) to be checked again (``process_spool``): never counted unverified for
   the resolver's sake, never refused.
2. Storing it waits for a busy database: reports from one relay process are stored one at a
   time (they all append to the ledger, whose head serialises writers anyway), and a
   transaction the database refused for contention or a lost connection is retried with
   backoff for up to ``abuse_db_wait_seconds``. Each failure is logged with its cause (the
   exception and the database's own first line, scrubbed), never with an address.
3. If the database still cannot take it, the report is **queued** in the spool and the
   reporter gets the same receipt with the spool's reference (``Q-...``); the spool is
   drained after the next report stored, and by ``process_spool`` (``mailveil reports
   recheck``, or a scheduler).

Only when even the spool cannot be written (a full disk) does the reporter get a 4xx.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.detect.models import AbuseReport
from mailveil.detect.reports import (
    MailboxAuth,
    ReportOutcome,
    expire_unreadable,
    recheck_report,
    submit_report,
)
from mailveil.ledger.append import Ledger
from mailveil.logs import scrub
from mailveil.relay import codes, report_spool
from mailveil.relay.codes import Reply
from mailveil.relay.context import RelayContext
from mailveil.relay.identity import Sender
from mailveil.relay.journal import Database
from mailveil.relay.messages import VerpKey
from mailveil.relay.sender_auth import (
    Resolver,
    aligned_with,
    check_sender,
    describe_temporary,
    from_mailbox_of,
    resent_from_mailbox_of,
)
from mailveil.vault import Vault

log = logging.getLogger("mailveil.relay")
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
DRAIN_BATCH = 20


def retryable(exc: BaseException) -> bool:
    """A database error that waiting can cure: contention, a lost or exhausted connection."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def cause(exc: BaseException) -> str:
    """``Type: first line of the database's message`` (scrubbed): what the log may say."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    first = scrub(text[0], "")[:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def check_reporter(
    raw: bytes, *, mail_from: str, client_ip: str, helo: str, rcpt: str, resolver: Resolver
) -> MailboxAuth:
    """Whether the report's From is proven (aligned SPF/DKIM), or why it cannot be told yet.

    A redirected report (the client sent the spam on unchanged, adding Resent-From) names
    the reporter in Resent-From: that identity is checked the same way instead."""
    mailbox = from_mailbox_of(raw)
    auth = check_sender(
        raw,
        mail_from="" if mail_from in ("", "<>") else mail_from,
        client_ip=client_ip,
        helo=helo,
        resolver=resolver,
        rcpt=rcpt,
    )
    pending = describe_temporary(auth) if auth.temporary_failure else None
    resent = resent_from_mailbox_of(raw)
    if resent is not None and not auth.aligned:
        return MailboxAuth(resent[0], aligned_with(auth, resent[1]), pending)
    return MailboxAuth(mailbox[0] if mailbox else "", auth.aligned, pending)


def _envelope(sender: Sender, mailbox: MailboxAuth, why: str) -> dict[str, Any]:
    return {
        "mail_from": sender.mail_from,
        "client_ip": sender.client_ip,
        "helo": sender.helo[:255],
        "received_at": datetime.now(UTC).isoformat(),
        "reporter": mailbox.header_from,
        "dmarc_pass": mailbox.dmarc_pass,
        "pending": mailbox.pending,
        "why": why,
        "report_id": None,
    }


@dataclass
class Kit:
    """What storing a report needs, from the relay or from a command."""

    settings: Settings
    ledger: Ledger
    vault: Vault
    verp_key: VerpKey | None

    def submit(self, session: Session, raw: bytes, mailbox: MailboxAuth) -> ReportOutcome:
        return submit_report(
            session,
            settings=self.settings,
            ledger=self.ledger,
            vault=self.vault,
            raw=raw,
            channel="mailbox",
            mailbox=mailbox,
            verp_key=self.verp_key,
        )


class AbuseIntake:
    """The mailbox's intake for one relay process (module docstring)."""

    def __init__(self, ctx: RelayContext, db: Database) -> None:
        self.ctx = ctx
        self.db = db
        self.kit = Kit(ctx.settings, ctx.runtime.ledger, ctx.runtime.vault, ctx.verp_keys)
        self.rcpt = f"{ctx.settings.abuse_mailbox_local}@{ctx.settings.relay_domain}"
        self.lock = asyncio.Lock()
        self.draining: asyncio.Task[None] | None = None

    async def take(self, sender: Sender, raw: bytes) -> Reply:
        ctx = self.ctx
        try:
            mailbox = await asyncio.to_thread(
                check_reporter,
                raw,
                mail_from=sender.mail_from,
                client_ip=sender.client_ip,
                helo=sender.helo,
                rcpt=self.rcpt,
                resolver=ctx.resolver,
            )
        except Exception as exc:  # the checks never raise on input; a bug must not bounce
            log.error("relay: abuse report sender check failed (%s)", cause(exc))
            mailbox = MailboxAuth("", False, pending=f"the check failed ({type(exc).__name__})")
        outcome, why = await self._store(raw, mailbox)
        if outcome is None:
            return await asyncio.to_thread(self._queue, sender, raw, mailbox, why)
        if outcome.outcome == "pending":
            await asyncio.to_thread(self._keep_pending, sender, raw, mailbox, outcome.report_id)
        self._drain_soon()
        return codes.report_received(outcome.report_id)

    async def _store(self, raw: bytes, mailbox: MailboxAuth) -> tuple[ReportOutcome | None, str]:
        """The stored report, or (None, why) once ``abuse_db_wait_seconds`` ran out."""
        deadline = time.monotonic() + self.ctx.settings.abuse_db_wait_seconds
        backoff, attempt = FIRST_BACKOFF, 0
        kit = self.kit
        while True:
            attempt += 1
            try:
                async with self.lock:
                    return (
                        await self.db.run(lambda s: kit.submit(s, raw, mailbox), commit=True),
                        "",
                    )
            except Exception as exc:
                why = cause(exc)
                if not retryable(exc):
                    log.error("relay: abuse report could not be stored (%s)", why)
                    return None, why
                left = deadline - time.monotonic()
                log.warning(
                    "relay: abuse report waits for the database (%s), attempt %d", why, attempt
                )
                if left <= 0:
                    return None, why
                await asyncio.sleep(min(left, backoff * (0.5 + random.random())))
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _queue(self, sender: Sender, raw: bytes, mailbox: MailboxAuth, why: str) -> Reply:
        try:
            item = report_spool.put(
                self.ctx.settings.data_dir, raw, _envelope(sender, mailbox, why or "stored later")
            )
        except (OSError, ValueError) as exc:
            log.error("relay: abuse report could not be queued either (%s)", cause(exc))
            return codes.TEMPORARY_FAILURE
        log.warning("relay: abuse report queued as %s (%s)", item.reference, why)
        return codes.report_queued(item.reference)

    def _keep_pending(
        self, sender: Sender, raw: bytes, mailbox: MailboxAuth, report_id: int
    ) -> None:
        envelope = _envelope(sender, mailbox, "sender not checked: DNS")
        envelope["report_id"] = report_id
        try:
            report_spool.put(self.ctx.settings.data_dir, raw, envelope)
        except (OSError, ValueError) as exc:
            # Stored, pending; without its bytes a re-check cannot settle it, so it will be
            # judged unverified with that reason (``process_spool``).
            log.error("relay: pending report %d not spooled (%s)", report_id, cause(exc))

    def _drain_soon(self) -> None:
        """Store queued reports now that the database answered (in the background)."""
        if self.draining is not None and not self.draining.done():
            return
        if not report_spool.names(self.ctx.settings.data_dir, limit=1):
            return
        self.draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        settings, kit, resolver = self.ctx.settings, self.kit, self.ctx.resolver
        stored = 0
        for item in report_spool.spooled(settings.data_dir, limit=DRAIN_BATCH):
            if item.report_id is not None:
                continue  # pending on DNS: for process_spool, not for the hot path
            work = functools.partial(_settle_in, item=item, kit=kit, resolver=resolver)
            try:
                async with self.lock:
                    done = await self.db.run(work, commit=True)
            except Exception as exc:
                if retryable(exc):
                    log.warning("relay: spool drain stopped (%s)", cause(exc))
                    return
                set_aside(settings, item, exc)
                continue
            after_commit(settings, item, done)
            stored += 1
        if stored:
            log.info("relay: %d queued abuse reports stored", stored)


@dataclass
class SpoolRun:
    """What one pass over the spool did."""

    stored: int = 0  # queued reports now in the database
    decided: int = 0  # pending reports whose sender could now be checked
    still_pending: int = 0
    expired: int = 0  # judged unverified: DNS did not answer within report_pending_hours
    failed: int = 0  # left in the spool (the database did not answer)
    set_aside: int = 0  # failed for another reason: moved out of the queue, kept
    reports: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "decided": self.decided,
            "still_pending": self.still_pending,
            "expired": self.expired,
            "failed": self.failed,
            "set_aside": self.set_aside,
            "reports": self.reports,
        }


def _received(envelope: dict[str, Any]) -> datetime:
    try:
        when = datetime.fromisoformat(str(envelope.get("received_at")))
    except ValueError:
        return datetime.now(UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _settle_in(
    session: Session, *, item: report_spool.Spooled, kit: Kit, resolver: Resolver
) -> Settled:
    return settle(session, item, kit=kit, resolver=resolver)


@dataclass(frozen=True)
class Settled:
    """What became of one spooled report (before its file is dealt with)."""

    kind: str  # stored | decided | still_pending | expired | gone
    report_id: int | None
    pending: bool = False  # stored, but its sender is still unchecked: keep the bytes


def settle(
    session: Session,
    item: report_spool.Spooled,
    *,
    kit: Kit,
    resolver: Resolver,
    now: datetime | None = None,
) -> Settled:
    """Store a queued report, or check a pending one again (``process_spool``). Does not
    commit; ``after_commit`` then keeps or removes the file."""
    settings, env = kit.settings, item.envelope
    if item.report_id is None:
        mailbox = MailboxAuth(
            header_from=str(env.get("reporter") or ""),
            dmarc_pass=bool(env.get("dmarc_pass")),
            pending=env.get("pending") or None,
        )
        out = kit.submit(session, item.raw, mailbox)
        return Settled("stored", out.report_id, pending=out.outcome == "pending")
    row = session.get(AbuseReport, item.report_id)
    if row is None or row.outcome != "pending":
        return Settled("gone", item.report_id)
    fresh = check_reporter(
        item.raw,
        mail_from=str(env.get("mail_from") or ""),
        client_ip=str(env.get("client_ip") or ""),
        helo=str(env.get("helo") or ""),
        rcpt=f"{settings.abuse_mailbox_local}@{settings.relay_domain}",
        resolver=resolver,
    )
    window = timedelta(hours=settings.report_pending_hours)
    expired = (now or datetime.now(UTC)) - _received(env) >= window
    out = recheck_report(
        session,
        settings=settings,
        ledger=kit.ledger,
        vault=kit.vault,
        row=row,
        raw=item.raw,
        mailbox=fresh,
        expired=expired,
        verp_key=kit.verp_key,
    )
    if out.outcome == "pending":
        return Settled("still_pending", row.id, pending=True)
    return Settled("expired" if expired and fresh.pending else "decided", row.id)


def set_aside(settings: Settings, item: report_spool.Spooled, exc: BaseException) -> None:
    """A report that fails for another reason than the database (a defect) is moved out of
    the queue, kept for the operator, so it cannot hold up the reports behind it."""
    kept = report_spool.set_aside(settings.data_dir, item.name)
    log.error("relay: spooled report %s set aside as %s (%s)", item.reference, kept, cause(exc))


def after_commit(settings: Settings, item: report_spool.Spooled, done: Settled) -> None:
    """Keep a report's bytes while it is pending (with its id), else let them go."""
    if done.kind == "stored" and done.pending:
        report_spool.rewrite(
            settings.data_dir, item, {**item.envelope, "report_id": done.report_id}
        )
    elif not done.pending:
        report_spool.remove(settings.data_dir, item.name)


def process_spool(
    session_factory: sessionmaker[Session],
    *,
    kit: Kit,
    resolver: Resolver,
    now: datetime | None = None,
    limit: int | None = None,
) -> SpoolRun:
    """Store queued reports and re-check pending ones: the function a scheduler (or
    ``mailveil reports recheck``) calls. Each spooled report is settled in its own
    transaction and its file dealt with after the commit; a database that does not answer
    stops the pass (the rest waits for the next). A pending report is decided when DNS
    answers, judged unverified once ``report_pending_hours`` passed since it arrived, else
    left pending."""
    run = SpoolRun()
    for item in report_spool.spooled(kit.settings.data_dir, limit=limit):
        try:
            with session_factory() as session:
                done = settle(session, item, kit=kit, resolver=resolver, now=now)
                session.commit()
        except Exception as exc:
            if not retryable(exc):
                set_aside(kit.settings, item, exc)
                run.set_aside += 1
                continue
            log.warning("relay: spool pass stopped, the database did not answer (%s)", cause(exc))
            run.failed += 1
            break
        after_commit(kit.settings, item, done)
        if done.kind != "gone":
            setattr(run, done.kind, getattr(run, done.kind) + 1)
            run.reports.append(int(done.report_id or 0))
    _expire_lost(session_factory, kit, now or datetime.now(UTC), run)
    return run


def _expire_lost(
    session_factory: sessionmaker[Session], kit: Kit, now: datetime, run: SpoolRun
) -> None:
    """Pending reports past their window whose bytes are not in the spool (a crash between
    storing and spooling): judged unverified, with that reason."""
    window = timedelta(hours=kit.settings.report_pending_hours)
    spooled = report_spool.spooled(kit.settings.data_dir)
    kept = {i.report_id for i in spooled if i.report_id is not None}
    with session_factory() as session:
        rows = session.scalars(
            select(AbuseReport).where(
                AbuseReport.outcome == "pending", AbuseReport.received_at <= now - window
            )
        ).all()
        for row in rows:
            if row.id not in kept:
                expire_unreadable(session, ledger=kit.ledger, row=row)
                run.expired += 1
                run.reports.append(row.id)
        session.commit()


__all__ = [
    "AbuseIntake",
    "Kit",
    "Settled",
    "SpoolRun",
    "after_commit",
    "cause",
    "check_reporter",
    "process_spool",
    "retryable",
    "set_aside",
    "settle",
]
