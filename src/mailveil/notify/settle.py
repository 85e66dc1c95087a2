"""Settling deliveries against the relay's own records: which relay message carried a
recipient's notification (the relay replaces the client's Message-ID, so attempts are matched
by service, customer and time), marking recipients delivered with their ledger entries, and
reconciling what a dead worker left in flight.

A recipient left ``delivering`` is settled by the relay's row for it: none or ``deferred``
means the smarthost never took it (sent again); ``rejected``, failed; ``delivered`` or
``bounced`` (taken, came back later), delivered. ``sending`` (or ``unknown``, what the relay's
reconcile makes of it) means the relay wrote the row
and died before it recorded the smarthost's answer (it writes "delivered" lazily after the
250): the mail may or may not have gone. Such a recipient is ``unconfirmed``: shown in the
counts, never resent, given no ``send`` ledger entry (so no correction reaches them unless
an operator includes them, ``correction(include_unconfirmed=True)``), and settled later if
the relay's row ever changes."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailveil.contacts.models import Alias, Principal
from mailveil.db.base import utcnow
from mailveil.db.session import writing
from mailveil.ledger.events import Event
from mailveil.logs import get_logger
from mailveil.notify.claims import lapsed, unclaim
from mailveil.notify.models import Recipient, Send, Template
from mailveil.notify.sends import KIND_SEND, send_ref
from mailveil.notify.transmit import Outcome, Ready
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER
from mailveil.relay.models import RelayMessage
from mailveil.runtime import Runtime

log = logging.getLogger("mailveil.notify")
_slog = get_logger("mailveil.notify")
MATCH_SLACK = timedelta(seconds=2)
_recipients = cast(Table, Recipient.__table__)


def attempt_times(s: Session, ids: list[int]) -> dict[int, datetime]:
    if not ids:
        return {}
    rows = s.execute(select(Recipient.id, Recipient.attempt_at).where(Recipient.id.in_(ids)))
    return {rid: at or utcnow() for rid, at in rows}


def match_tokens(s: Session, principal_id: int, attempts: dict[int, datetime]) -> dict[int, str]:
    """customer -> the unclaimed relay message from ``principal_id`` to them written since
    their attempt began (the earliest such)."""
    if not attempts:
        return {}
    since = min(attempts.values()) - MATCH_SLACK
    rows = s.execute(
        select(
            RelayMessage.customer_id,
            RelayMessage.token,
            RelayMessage.created_at,
            RelayMessage.status,
        )
        .where(
            RelayMessage.principal_id == principal_id,
            RelayMessage.customer_id.in_(sorted(attempts)),
            RelayMessage.direction == DIRECTION_TO_CUSTOMER,
            RelayMessage.created_at >= since,
        )
        .order_by(RelayMessage.created_at, RelayMessage.id)
    ).all()
    claimed = set(
        s.scalars(
            select(Recipient.relay_token).where(Recipient.relay_token.in_([r.token for r in rows]))
        )
    )
    out: dict[int, str] = {}
    for cid, tok, created, _status in rows:
        if cid in out or tok in claimed or created < attempts[cid] - MATCH_SLACK:
            continue
        out[cid] = tok
        claimed.add(tok)
    return out


def mark_delivered(
    runtime: Runtime,
    s: Session,
    send: Send,
    template: Template,
    items: dict[int, tuple[int, str | None, list[str], str | None]],
) -> None:
    """Recipients delivered (from ``delivering``, or ``unconfirmed`` once the relay's row
    says so): state, token and one ``send`` ledger entry each. Does not commit."""
    if not items:
        return
    now = utcnow()
    # Only the rows this transaction moves get an entry: a worker whose claim lapsed after
    # the mail went out and a reconciler settling the same recipient both get here, and the
    # second to update finds the row already delivered (SQLite: one writer at a time;
    # PostgreSQL: it waits on the first one's row lock, then re-checks the state), so each
    # (send, recipient) is ledgered once.
    moved = set(
        s.scalars(
            update(Recipient)
            .where(
                Recipient.id.in_(sorted(items)),
                Recipient.state.in_(("delivering", "unconfirmed")),
            )
            .values(state="delivered", delivered_at=now, reason=None)
            .returning(Recipient.id)
        )
    )
    if not moved:
        return
    tokens = [{"rid": rid, "tok": items[rid][3]} for rid in sorted(moved)]
    if tokens:  # one executemany: per-recipient statements were a share of every batch
        s.connection().execute(
            update(_recipients)
            .where(_recipients.c.id == bindparam("rid"))
            .values(relay_token=bindparam("tok")),
            tokens,
        )
    events = []
    for rid, (cid, alias, fact_ids, tok) in items.items():
        if rid not in moved:
            continue
        detail: dict[str, Any] = {
            "send": send.id,
            "template": template.name,
            "version": template.version,
            "stage": send.stage,
            "facts": fact_ids,
            "relay_message": tok,
        }
        if send.corrects_id is not None:
            detail["corrects"] = send.corrects_id
        events.append(
            Event(
                KIND_SEND,
                send.created_by,
                f"customer:{cid}",
                alias,
                "notification",
                send_ref(send.id),
                detail,
            )
        )
    runtime.ledger.append(s, events)


# A recipient the relay defers (4xx) this many times in one worker's run fails.
MAX_DEFERRALS = 3


def record_settled(
    runtime: Runtime,
    s: Session,
    send: Send,
    template: Template,
    owner: Principal,
    ready: list[Ready],
    outcome: Outcome,
    deferrals: dict[int, int],
) -> None:
    """``record_outcome``, taken again when SQLite refuses the write because another writer
    committed since this transaction read (nothing was written; every change is guarded by
    the recipient's state, so doing it again is safe). The mail has gone: giving up here
    would leave the group to the reconciliation after a crash."""
    for _attempt in range(200):
        try:
            record_outcome(runtime, s, send, template, owner, ready, outcome, dict(deferrals))
        except OperationalError as exc:
            if "locked" not in str(exc.orig):
                raise
            s.rollback()
            time.sleep(0.02)
            continue
        for rid in outcome.deferred:
            deferrals[rid] = deferrals.get(rid, 0) + 1
        return
    record_outcome(runtime, s, send, template, owner, ready, outcome, deferrals)


def record_outcome(
    runtime: Runtime,
    s: Session,
    send: Send,
    template: Template,
    owner: Principal,
    ready: list[Ready],
    outcome: Outcome,
    deferrals: dict[int, int],
) -> None:
    writing(s)
    by_id = {r.recipient_id: r for r in ready}
    attempted = attempt_times(s, list(outcome.delivered))
    tokens = match_tokens(
        s, owner.id, {by_id[r].customer_id: attempted[r] for r in outcome.delivered}
    )
    delivered = {rid: tokens.get(by_id[rid].customer_id) for rid in outcome.delivered}
    mark_delivered(
        runtime,
        s,
        send,
        template,
        {
            rid: (by_id[rid].customer_id, by_id[rid].alias, by_id[rid].fact_ids, tok)
            for rid, tok in delivered.items()
        },
    )
    for rid, reason in outcome.failed.items():
        s.execute(
            update(Recipient)
            .where(Recipient.id == rid, Recipient.state == "delivering")
            .values(state="failed", reason=reason)
        )
    for rid in outcome.deferred:
        deferrals[rid] = deferrals.get(rid, 0) + 1
        if deferrals[rid] >= MAX_DEFERRALS:
            s.execute(
                update(Recipient)
                .where(Recipient.id == rid, Recipient.state == "delivering")
                .values(state="failed", reason="deferred by the relay")
            )
        else:
            unclaim(s, [rid])
    unclaim(s, list(outcome.unsent))
    s.commit()
    deliveries = runtime.metrics.notify_deliveries
    for outcome_name, count in (
        ("delivered", len(outcome.delivered)),
        ("failed", len(outcome.failed)),
        ("deferred", len(outcome.deferred)),
        ("unsent", len(outcome.unsent)),
    ):
        if count:
            deliveries.labels(outcome_name).inc(count)
    _slog.info(
        "send_batch", send=send.id, stage=send.stage, delivered=len(outcome.delivered),
        failed=len(outcome.failed), deferred=len(outcome.deferred), unsent=len(outcome.unsent),
    )  # fmt: skip


UNCONFIRMED_REASON = "the relay took it but never recorded the smarthost's answer"


def reconcile(
    runtime: Runtime, s: Session, send: Send, template: Template, owner: Principal
) -> float | None:
    """Settle recipients a dead worker left ``delivering`` (its claim lapsed) from the
    relay's records (and
    ``unconfirmed`` ones whose relay row has since changed). Returns seconds to wait when
    some are too recent to judge (the relay may still be on them)."""
    # Only batches no live worker holds: a helper's batch in flight is its own to record.
    rows = s.execute(
        select(Recipient.id, Recipient.customer_id, Recipient.attempt_at, Recipient.fact_ids).where(
            Recipient.send_id == send.id, Recipient.state == "delivering", lapsed(utcnow())
        )
    ).all()
    settle_unconfirmed(runtime, s, send, template, owner)
    if not rows:
        return None
    horizon = timedelta(seconds=runtime.settings.notify_reconcile_after_seconds)
    now = utcnow()
    young = [r for r in rows if r.attempt_at is None or r.attempt_at > now - horizon]
    if young:
        oldest = min(r.attempt_at or now for r in young)
        return max((oldest + horizon - now).total_seconds(), 0.2)
    tokens = match_tokens(s, owner.id, {r.customer_id: r.attempt_at for r in rows})
    statuses = _statuses(s, list(tokens.values()))
    alias_of = _aliases(s, owner.id, [r.customer_id for r in rows])
    delivered: dict[int, tuple[int, str | None, list[str], str | None]] = {}
    tally: dict[str, int] = {}
    for r in rows:
        tok = tokens.get(r.customer_id)
        status = statuses.get(tok) if tok else None
        outcome = _settled(status)
        tally[outcome] = tally.get(outcome, 0) + 1
        if outcome == "delivered":
            delivered[r.id] = (r.customer_id, alias_of.get(r.customer_id), list(r.fact_ids), tok)
            continue
        values: dict[str, Any] = {"state": outcome}
        if outcome == "failed":
            values.update(reason="rejected by the smarthost", relay_token=tok)
        elif outcome == "unconfirmed":
            values.update(reason=UNCONFIRMED_REASON, relay_token=tok)
        s.execute(
            update(Recipient)
            .where(Recipient.id == r.id, Recipient.state == "delivering")
            .values(**values)
        )
    mark_delivered(runtime, s, send, template, delivered)
    if tally.get("unconfirmed"):
        _note_unconfirmed(runtime, s, send, tally["unconfirmed"])
    s.commit()
    log.info("notify: send %s reconciled %d in-flight recipient(s): %s", send.id, len(rows), tally)
    return None


# Relay rows whose outcome nobody knows: ``sending`` (the relay died before recording the
# smarthost's answer) and ``unknown`` (what the relay's reconcile makes of such a row).
UNSETTLED = ("sending", "unknown")


def _settled(status: str | None) -> str:
    """A recipient's state from their relay row's status (None: no row)."""
    if status is None or status == "deferred":
        return "pending"
    if status == "rejected":
        return "failed"
    if status in UNSETTLED:
        return "unconfirmed"
    return "delivered"  # delivered, or bounced after the smarthost took it


def settle_unconfirmed(
    runtime: Runtime, s: Session, send: Send, template: Template, owner: Principal
) -> int:
    """Unconfirmed recipients whose relay row has since changed: settled like the rest.
    Does not commit; how many changed."""
    rows = s.execute(
        select(
            Recipient.id, Recipient.customer_id, Recipient.fact_ids, Recipient.relay_token
        ).where(Recipient.send_id == send.id, Recipient.state == "unconfirmed")
    ).all()
    statuses = _statuses(s, [r.relay_token for r in rows if r.relay_token])
    changed = [r for r in rows if statuses.get(r.relay_token or "", "sending") not in UNSETTLED]
    if not changed:
        return 0
    alias_of = _aliases(s, owner.id, [r.customer_id for r in changed])
    delivered: dict[int, tuple[int, str | None, list[str], str | None]] = {}
    for r in changed:
        outcome = _settled(statuses[r.relay_token])
        if outcome == "delivered":
            delivered[r.id] = (r.customer_id, alias_of.get(r.customer_id), list(r.fact_ids),
                               r.relay_token)  # fmt: skip
            continue
        values: dict[str, Any] = {"state": outcome, "reason": None}
        if outcome == "pending":
            values["relay_token"] = None
        else:
            values["reason"] = "rejected by the smarthost"
        s.execute(
            update(Recipient)
            .where(Recipient.id == r.id, Recipient.state == "unconfirmed")
            .values(**values)
        )
    mark_delivered(runtime, s, send, template, delivered)
    return len(changed)


def _statuses(s: Session, tokens: list[str]) -> dict[str, str]:
    if not tokens:
        return {}
    return {
        tok: status
        for tok, status in s.execute(
            select(RelayMessage.token, RelayMessage.status).where(RelayMessage.token.in_(tokens))
        )
    }


def _aliases(s: Session, principal_id: int, customer_ids: list[int]) -> dict[int, str]:
    return {
        cid: address
        for cid, address in s.execute(
            select(Alias.customer_id, Alias.address).where(
                Alias.principal_id == principal_id, Alias.customer_id.in_(customer_ids)
            )
        )
    }


def _note_unconfirmed(runtime: Runtime, s: Session, send: Send, count: int) -> None:
    """The ledger says some recipients of the send are unknown (shown, not counted sent)."""
    detail = {"send": send.id, "stage": send.stage, "unconfirmed": count,
              "reason": UNCONFIRMED_REASON}  # fmt: skip
    event = Event("send_unconfirmed", "system", None, None, "notification", send_ref(send.id),
                  detail)  # fmt: skip
    runtime.ledger.append(s, [event])
    log.warning("notify: send %s has %d unconfirmed recipient(s)", send.id, count)


__all__ = [
    "MAX_DEFERRALS",
    "UNCONFIRMED_REASON",
    "attempt_times",
    "mark_delivered",
    "match_tokens",
    "reconcile",
    "record_outcome",
    "record_settled",
    "settle_unconfirmed",
    "writing",
]
