"""Deliver and record: one message to the smarthost, with the ledger told before and after.

The one way a message leaves the relay, for the SMTP handler and for a quarantine release:

1. its relay_messages row and ``message`` entry (with the entries that go before it) are
   committed -- nothing leaves that the ledger does not have;
2. the smarthost is asked (``relay.delivery``, before-queue);
3. what it answered is recorded: ``delivered`` (with a ``message_delivered`` entry),
   ``deferred`` (4xx, or unreachable: ``message_deferred``) or ``rejected`` (5xx:
   ``message_rejected``), with the next hop's code as a number only.

Where the records go is the caller's ``Book``: the relay's group commit (``GroupCommitBook``:
the delivered status rides on the next batch instead of holding the 250 back) or a session
the caller commits (``SessionBook``, the operator's release).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy.orm import Session

from mailveil.relay import codes
from mailveil.relay.codes import Reply
from mailveil.relay.context import RelayContext
from mailveil.relay.decision import KIND_DEFERRED, KIND_REJECTED, Deliver, outcome_event
from mailveil.relay.delivery import DeliveryError, TemporaryDeliveryError
from mailveil.relay.journal import GroupCommit, NewMessage, StatusChange, apply_writes
from mailveil.relay.reconcile import as_retry, delivered_event
from mailveil.relay.routes import Route

log = logging.getLogger("mailveil.relay")


class Smarthost(Protocol):
    """What ``delivery.Smarthost`` offers."""

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> None: ...


class Book(Protocol):
    """Where a message and its outcome are recorded."""

    async def message(self, write: NewMessage) -> str:
        """Commit the message; its token (a retry's is the retried message's)."""
        ...

    async def outcome(self, change: StatusChange, *, delivered: bool, temporary: bool) -> None:
        """Record what the smarthost answered (a failure to record is the book's to log)."""
        ...


@dataclass(frozen=True)
class Handed:
    """What became of the message: the reply for its sender and, when the smarthost did
    not take it (or the ledger could not record it first), why."""

    reply: Reply
    token: str | None = None
    error: Exception | None = None


async def hand_over(
    ctx: RelayContext,
    smarthost: Smarthost,
    book: Book,
    route: Route,
    decision: Deliver,
    *,
    retry_key: str | None = None,
) -> Handed:
    """Commit, send, record (module docstring). ``retry_key``: what makes a sender's retry
    of a deferred message that message (``relay.reconcile``)."""
    out = decision.outgoing
    out = replace(out, row={**out.row, "retry_key": retry_key, "attempts": 1})
    try:
        token = await book.message(NewMessage(out.row, out.event, decision.before))
    except Exception as exc:
        log.error("relay: ledger write failed before delivery (%s)", type(exc).__name__)
        return Handed(codes.TEMPORARY_FAILURE, error=exc)
    out = as_retry(out, token, ctx.verp_key, ctx.settings.relay_domain)
    try:
        await smarthost.send(out.mail_from, out.rcpt, out.data)
    except Exception as exc:
        if not isinstance(exc, DeliveryError):
            log.error("relay: delivery failed (%s)", type(exc).__name__)
            exc = TemporaryDeliveryError(codes.SMARTHOST_UNREACHABLE)
        temporary = isinstance(exc, TemporaryDeliveryError)
        kind = KIND_DEFERRED if temporary else KIND_REJECTED
        code = str(exc.next_hop_code) if exc.next_hop_code else exc.reply.enhanced
        change = StatusChange(
            out.token,
            "deferred" if temporary else "rejected",
            code,
            outcome_event(out, route, kind, exc.reply),
            out.row,
        )
        await book.outcome(change, delivered=False, temporary=temporary)
        return Handed(exc.reply, out.token, exc)
    done = StatusChange(out.token, "delivered", event=delivered_event(out, route), row=out.row)
    await book.outcome(done, delivered=True, temporary=False)
    return Handed(codes.QUEUED, out.token)


class GroupCommitBook:
    """The SMTP handler's records: through the relay's group commit."""

    def __init__(self, commits: GroupCommit, retry_seconds: float) -> None:
        self.commits = commits
        self.retry_seconds = retry_seconds

    async def message(self, write: NewMessage) -> str:
        return await self.commits.record(write)

    async def outcome(self, change: StatusChange, *, delivered: bool, temporary: bool) -> None:
        if delivered:
            # The message is in the ledger (written before delivery); its outcome rides on
            # the next group commit instead of holding the sender's 250 back for a commit of
            # its own. After a crash in between, the row stays "sending" until
            # relay.reconcile marks it "unknown" (never "delivered").
            self.commits.submit(change, lazy=True)
            return
        if temporary:  # its retry will come: recognise it (relay.reconcile)
            self.commits.expect_retries(self.retry_seconds)
        try:
            await self.commits.write(change)
        except Exception as exc:
            log.error("relay: ledger write failed (%s)", type(exc).__name__)


class SessionBook:
    """An operator command's records: written in its session and committed at once."""

    def __init__(self, session: Session, ctx: RelayContext) -> None:
        self.session = session
        self.ctx = ctx

    async def message(self, write: NewMessage) -> str:
        apply_writes(self.session, [write], self.ctx.runtime.ledger)
        self.session.commit()  # in the ledger before it leaves, as every message
        return str(write.row["token"])

    async def outcome(self, change: StatusChange, *, delivered: bool, temporary: bool) -> None:
        apply_writes(self.session, [change], self.ctx.runtime.ledger)
        self.session.commit()


__all__ = ["Book", "GroupCommitBook", "Handed", "SessionBook", "Smarthost", "hand_over"]
