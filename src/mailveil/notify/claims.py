"""Recipient batches claimed by one worker at a time, so several workers (threads, processes,
hosts) split a stage without two of them ever taking the same recipient.

A worker claims up to ``limit`` pending recipients of the stage's slice for a lease
(``claimed_by``, ``claim_until``) in one statement: on PostgreSQL the candidate rows are
locked with ``FOR UPDATE SKIP LOCKED`` (concurrent claimers take different rows instead of
queueing behind each other), on SQLite the conditional UPDATE runs under the database's one
writer lock (its IN subquery is run once). Either way the UPDATE re-checks the claim
condition, and RETURNING says which rows this worker now holds.

A claim only guards ``pending`` rows; the move to ``delivering`` is guarded by the claim
(``claimed_by`` = this worker) and renews it, and a ``delivering`` row is reconciled from the
relay's records only once its claim lapsed (``notify.settle.reconcile``): a live worker's
in-flight batch is never settled under it, a dead worker's is, and its pending rows are
claimed again by anyone.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from mailveil.db.base import utcnow
from mailveil.db.session import writing
from mailveil.notify.gates import slice_of
from mailveil.notify.models import Recipient


def lapsed(now: datetime) -> ColumnElement[bool]:
    """Rows no live worker holds (never claimed, or the claim's lease lapsed)."""
    return or_(Recipient.claim_until.is_(None), Recipient.claim_until < now)


def _claimable(
    send_id: int, cutoff: tuple[int, int], worker: str, now: datetime
) -> tuple[ColumnElement[bool], ...]:
    return (
        slice_of(send_id, cutoff),
        Recipient.state == "pending",
        or_(lapsed(now), Recipient.claimed_by == worker),
    )


def claim_batch(
    s: Session, send_id: int, cutoff: tuple[int, int], worker: str, lease: float, limit: int
) -> list[int]:
    """Claim up to ``limit`` pending recipients of the slice for ``worker``; their ids (in
    stage order). Starts and commits its own transaction (on SQLite the UPDATE is its first
    statement, so it waits for the writer lock instead of failing)."""
    s.rollback()
    now = utcnow()
    cond = _claimable(send_id, cutoff, worker, now)
    pick = select(Recipient.id).where(*cond).order_by(Recipient.bucket, Recipient.id).limit(limit)
    if s.get_bind().dialect.name == "postgresql":
        # Two statements: an IN (subquery ... FOR UPDATE SKIP LOCKED) inside the UPDATE may
        # be run again per row, each run skipping the rows the UPDATE already changed, so
        # LIMIT would bound nothing. The locks hold until the commit below.
        ids = list(s.scalars(pick.with_for_update(skip_locked=True)))
        if not ids:
            s.rollback()
            return []
        chosen: Any = Recipient.id.in_(ids)
    else:
        chosen = Recipient.id.in_(pick.scalar_subquery())  # run once, under the write lock
    got = s.execute(
        update(Recipient)
        .where(chosen, *cond)
        .values(claimed_by=worker[:64], claim_until=now + timedelta(seconds=lease))
        .returning(Recipient.id, Recipient.bucket)
    ).all()
    s.commit()
    return [rid for rid, _bucket in sorted(got, key=lambda r: (r[1], r[0]))]


def claimable(s: Session, send_id: int, cutoff: tuple[int, int]) -> bool:
    """Whether anyone could claim a recipient of the slice now (a cheap look before a
    helper sets up its SMTP session)."""
    cond = _claimable(send_id, cutoff, "", utcnow())
    return s.scalar(select(Recipient.id).where(*cond).limit(1)) is not None


def outstanding(s: Session, send_id: int, cutoff: tuple[int, int]) -> int:
    """Recipients of the slice not settled yet (pending, or in some worker's flight)."""
    return int(
        s.scalar(
            select(func.count()).where(
                slice_of(send_id, cutoff), Recipient.state.in_(("pending", "delivering"))
            )
        )
        or 0
    )


def renew_claims(s: Session, ids: list[int], worker: str, lease: float) -> set[int]:
    """Renew ``worker``'s claim on these in-flight recipients (a long batch outlives no
    lease); the ids it still holds. Commits (first what the caller read: see ``writing``)."""
    writing(s)
    held = set(
        s.scalars(
            update(Recipient)
            .where(
                Recipient.id.in_(ids),
                Recipient.state == "delivering",
                Recipient.claimed_by == worker[:64],
            )
            .values(claim_until=utcnow() + timedelta(seconds=lease))
            .returning(Recipient.id)
        )
    )
    s.commit()
    return held


def unclaim(s: Session, ids: list[int], state: str = "delivering") -> None:
    """Back to pending, claimable by anyone at once (deferred by the relay, or never sent
    because the connection broke). Does not commit."""
    if ids:
        s.execute(
            update(Recipient)
            .where(Recipient.id.in_(sorted(ids)), Recipient.state == state)
            .values(state="pending", claimed_by=None, claim_until=None)
        )


__all__ = ["claim_batch", "claimable", "lapsed", "outstanding", "renew_claims", "unclaim"]
