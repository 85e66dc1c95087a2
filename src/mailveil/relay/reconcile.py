"""What finally became of each message: one ``message`` entry, one final outcome, no guesses.

The relay writes a message's relay_messages row (``sending``) and its ``message`` ledger entry
before it asks the smarthost, then records the answer:

- 250: the row becomes ``delivered`` with a ``message_delivered`` entry (lazily: it rides on
  the next group commit, see ``journal``);
- 4xx or no answer: ``deferred`` with a ``message_deferred`` entry; the sender was told to
  retry. Its retry (same envelope, same bytes: ``retry_key``) takes over the same row
  (``attempts`` + 1) with no second ``message`` entry, so the ledger's ``message`` entries
  count messages, not attempts, and the retry's outcome is this message's outcome;
- 5xx: ``rejected`` with a ``message_rejected`` entry.

A relay killed (or cut from its database) between the ``message`` entry and the outcome leaves
the row ``sending``. ``reconcile`` finds such rows once they are older than any live relay
can keep one (``relay_reconcile_after_seconds``), on start and every
``relay_reconcile_interval_seconds``, and marks them ``unknown`` with a ``message_unknown``
entry: whether the smarthost took the message is in the smarthost's log, not ours, so the relay
never says ``delivered`` for it. (The ledger cannot settle it either: an outcome entry and its
status commit together, so a row still ``sending`` has none.) A sender that never saw the 250
retries, and the retry takes over the ``unknown`` row like a deferred one -- which is where a
kill between the smarthost's acceptance and the 250 gives a duplicate (README).

Recognising a retry costs one statement per group commit, so the journal only looks while
retryable rows may exist: after this process deferred a message, or when the last reconcile
saw a retryable row younger than ``relay_retry_window_seconds``. Another relay process learns of
a deferral at its next reconcile (``relay_reconcile_interval_seconds``, 60 s): a retry reaching it
sooner is recorded as a new message. MTAs wait minutes before a first retry (Postfix:
``minimal_backoff_time``, 300 s), so in practice every retry is recognised.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, Table, exists, func, select, update
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.relay.compose import Outgoing
from mailveil.relay.messages import verp_address
from mailveil.relay.models import RelayMessage
from mailveil.relay.routes import Route

KIND_DELIVERED = "message_delivered"
KIND_UNKNOWN = "message_unknown"
# A sender may retry a message in these states; its retry takes the row over.
RETRYABLE = ("deferred", "unknown")
_messages: Table = RelayMessage.__table__  # type: ignore[assignment]


def retry_key(direction: str, alias: str, mail_from: str, raw: bytes) -> str:
    """What makes two submissions one message: the same envelope and the same bytes (an MTA
    retries from its queue file unchanged)."""
    h = hashlib.sha256()
    for part in (direction, alias.lower(), mail_from.lower()):
        h.update(part.encode("utf-8", "surrogateescape") + b"\x00")
    h.update(raw)
    return h.hexdigest()


def delivered_event(out: Outgoing, route: Route) -> Event:
    """The final outcome of a message the smarthost took (250)."""
    return Event(
        kind=KIND_DELIVERED,
        actor="system",
        subject=route.customer_ref,
        alias=route.alias,
        purpose=route.direction,
        ref=out.row["reason"],
        detail={
            "relay_message": out.token,
            "sha256": out.row["sha256"],
            "size": out.row["size"],
        },
    )


def as_retry(out: Outgoing, token: str, verp_key: bytes, relay_domain: str) -> Outgoing:
    """``out`` sent as a retry of the message ``token`` (its row, its bounce address)."""
    if token == out.token:
        return out
    return replace(
        out,
        token=token,
        mail_from=verp_address(verp_key, token, relay_domain),
        row={**out.row, "token": token},
    )


def take_over_retries(session: Session, rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """For new rows (by token) whose ``retry_key`` names a retryable row: that row goes back
    to ``sending`` with the new attempt's copy (Message-ID, size, hash) and one more attempt.
    Returns new token -> the retried row's token. Caller's transaction."""
    by_key = {r["retry_key"]: t for t, r in rows.items() if r.get("retry_key")}
    if not by_key:
        return {}
    oldest = (
        select(func.min(_messages.c.id))
        .where(_messages.c.retry_key.in_(list(by_key)), _messages.c.status.in_(RETRYABLE))
        .group_by(_messages.c.retry_key)
    )
    now = utcnow()
    found = session.execute(
        update(_messages)
        .where(_messages.c.id.in_(oldest), _messages.c.status.in_(RETRYABLE))
        .values(
            status="sending", status_code=None, attempts=_messages.c.attempts + 1, updated_at=now
        )
        .returning(_messages.c.retry_key, _messages.c.token)
    ).all()
    taken: dict[str, str] = {}
    for key, token in found:
        new = rows[by_key[key]]
        # The copy now on its way is this attempt's: replies are matched by its Message-ID,
        # and notify.settle matches a recipient's attempt to the row by its time.
        session.execute(
            update(_messages)
            .where(_messages.c.token == token)
            .values(
                message_id=new["message_id"],
                size=new["size"],
                sha256=new["sha256"],
                created_at=new["created_at"],
            )
        )
        taken[by_key[key]] = str(token)
    return taken


@dataclass(frozen=True)
class Reconciled:
    """One reconcile pass: rows marked unknown, and whether retryable rows may exist."""

    unknown: int
    retryable: bool


def _unknown_event(row: Row[Any]) -> Event:
    return Event(
        kind=KIND_UNKNOWN,
        actor="system",
        subject=f"customer:{row.customer_id}",
        alias=row.alias,
        purpose=row.direction,
        ref=row.reason,
        detail={
            "relay_message": row.token,
            "principal": f"principal:{row.principal_id}",
            "why": "the relay stopped before the smarthost's answer was recorded",
        },
    )


def reconcile(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    *,
    older_than: float | None = None,
) -> Reconciled:
    """Mark rows left ``sending`` for longer than ``older_than`` seconds (default
    ``relay_reconcile_after_seconds``) ``unknown``, each with a ``message_unknown`` entry, in
    the caller's transaction (commit it). One UPDATE ... RETURNING claims the rows, so two
    relays reconciling at once never record one twice."""
    after = settings.relay_reconcile_after_seconds if older_than is None else older_than
    now = utcnow()
    claimed = session.execute(
        update(_messages)
        .where(
            _messages.c.status == "sending",
            _messages.c.updated_at <= now - timedelta(seconds=after),
        )
        .values(status="unknown", status_code=None, updated_at=now)
        .returning(
            _messages.c.token,
            _messages.c.direction,
            _messages.c.principal_id,
            _messages.c.customer_id,
            _messages.c.alias,
            _messages.c.reason,
        )
    ).all()
    if claimed:
        ledger.append(session, [_unknown_event(r) for r in claimed])
    window = now - timedelta(seconds=settings.relay_retry_window_seconds)
    retryable = bool(
        session.scalar(
            select(
                exists().where(
                    _messages.c.status.in_(RETRYABLE),
                    _messages.c.updated_at >= window,
                    _messages.c.retry_key.is_not(None),
                )
            )
        )
    )
    return Reconciled(unknown=len(claimed), retryable=retryable)


__all__ = [
    "KIND_DELIVERED",
    "KIND_UNKNOWN",
    "RETRYABLE",
    "Reconciled",
    "as_retry",
    "delivered_event",
    "reconcile",
    "retry_key",
    "take_over_retries",
]
