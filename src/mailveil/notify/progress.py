"""What a person watching a send needs: each stage's planned size and the gates' measures
after it (the same computation the worker gates on), whether the stored assessment says
the send would halt, and a sample of recipients with the evidence that made them
eligible or the reason they are not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.contacts.models import Customer
from mailveil.notify.models import Fact, Recipient, Send
from mailveil.notify.sends import counts_of, halt_forecast, stage_sizes
from mailveil.notify.worker import cutoff_of, gate_rates

GATES = ("ineligible", "bounce", "complaint", "unsubscribe")


@dataclass
class StageProgress:
    index: int
    fraction: float
    planned: int  # recipients after this stage, cumulative
    state: str  # done | under way | soaking | waiting | not reached
    rates: dict[str, float] = field(default_factory=dict)  # the gates' measures, when done


def stage_progress(session: Session, send: Send) -> list[StageProgress]:
    """Every stage of the send, with the gates measured over the recipients up to it."""
    total = session.scalar(select(func.count()).where(Recipient.send_id == send.id)) or 0
    floor = int(send.thresholds.get("min_stage", 1))
    plan = stage_sizes(floor, total, list(send.stages)) if total else [0] * len(send.stages)
    out = []
    for i, fraction in enumerate(send.stages):
        if i < send.stage or (i == send.stage and send.status == "completed"):
            state = "done"
        elif i == send.stage and send.status == "running":
            state = "soaking" if send.stage_done_at is not None else "under way"
        elif i == send.stage and send.status in ("halted", "killed"):
            state = "stopped here"
        else:
            state = "waiting" if send.status in ("ready", "awaiting_approval") else "not reached"
        row = StageProgress(i, float(fraction), plan[i], state)
        if state != "waiting" and state != "not reached" and total:
            cutoff = cutoff_of(session, send, i)
            if cutoff is not None:
                row.rates, _total, _delivered = gate_rates(session, send, cutoff)
        out.append(row)
        if i > 0 and plan[i] == plan[i - 1] and state in ("waiting", "not reached"):
            break  # later stages add nobody
    return out


def forecast_of(session: Session, send: Send) -> dict[str, Any] | None:
    return halt_forecast(send, counts_of(session, send.id))


def list_sends(session: Session, *, limit: int = 200) -> list[Send]:
    """Sends, newest first (those still being created left out)."""
    return list(
        session.scalars(
            select(Send).where(Send.status != "creating").order_by(Send.id.desc()).limit(limit)
        )
    )


def open_send_count(session: Session) -> int:
    """Sends waiting for approval, ready, or running."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Send)
            .where(Send.status.in_(("awaiting_approval", "ready", "running")))
        )
        or 0
    )


def recipient_sample(
    session: Session, send_id: int, *, state: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Recipients (customer external ids, never addresses) with their state, reason and the
    facts that are their evidence."""
    stmt = (
        select(Recipient, Customer.external_id)
        .join(Customer, Customer.id == Recipient.customer_id)
        .where(Recipient.send_id == send_id)
    )
    if state is not None:
        stmt = stmt.where(Recipient.state == state)
    rows = list(session.execute(stmt.order_by(Recipient.bucket, Recipient.id).limit(limit)))
    wanted = {f for r, _ext in rows for f in (r.fact_ids or [])}
    facts = {
        f.fact_id: {"id": f.fact_id, "kind": f.kind, "occurred_at": f.occurred_at.isoformat()}
        for f in session.scalars(select(Fact).where(Fact.fact_id.in_(wanted or {""})))
    }
    return [
        {
            "customer": ext,
            "state": r.state,
            "reason": r.reason,
            "evidence": [facts.get(f, {"id": f, "kind": "(missing)", "occurred_at": None})
                         for f in (r.fact_ids or [])],
        }
        for r, ext in rows
    ]  # fmt: skip


__all__ = [
    "GATES",
    "StageProgress",
    "forecast_of",
    "halt_forecast",
    "list_sends",
    "open_send_count",
    "recipient_sample",
    "stage_progress",
]
