"""The gates after each stage: the cumulative ineligible, bounce, complaint and unsubscribe
rates of the recipients so far, and the halt when one is above its threshold (a
``send_gate_failed`` signal, a ``send_halted`` ledger entry, a warning line)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from mailveil.db.base import utcnow
from mailveil.detect.signals import record_signal
from mailveil.ledger.events import Event
from mailveil.logs import get_logger
from mailveil.notify.models import Fact, Recipient, Send, Template
from mailveil.notify.sends import send_ref
from mailveil.relay.models import RelayMessage
from mailveil.runtime import Runtime

log = get_logger("mailveil.notify")


def slice_of(send_id: int, cutoff: tuple[int, int]) -> Any:
    b, i = cutoff
    return and_(
        Recipient.send_id == send_id,
        or_(Recipient.bucket < b, and_(Recipient.bucket == b, Recipient.id <= i)),
    )


def gate(s: Session, send: Send, cutoff: tuple[int, int]) -> dict[str, Any] | None:
    """The first failing gate of the stage just delivered (cumulative over the stages so
    far), or None."""
    rates, total, delivered = gate_rates(s, send, cutoff)
    for name, rate in rates.items():
        limit = float(send.thresholds.get(name, 1.0))
        if rate > limit:
            return {
                "gate": name,
                "rate": round(rate, 6),
                "threshold": limit,
                "stage": send.stage,
                "stage_recipients": total,
                "delivered": delivered,
            }
    return None


def gate_rates(
    s: Session, send: Send, cutoff: tuple[int, int]
) -> tuple[dict[str, float], int, int]:
    """The gates' measures over the recipients up to ``cutoff``: (rates by gate,
    recipients, delivered)."""
    states = dict(
        s.execute(
            select(Recipient.state, func.count())
            .where(slice_of(send.id, cutoff))
            .group_by(Recipient.state)
        ).all()
    )
    total = sum(states.values())
    delivered = states.get("delivered", 0)
    failed = states.get("failed", 0)
    bounced = failed + (
        s.scalar(
            select(func.count())
            .select_from(Recipient)
            .join(RelayMessage, RelayMessage.token == Recipient.relay_token)
            .where(slice_of(send.id, cutoff), RelayMessage.status.in_(("bounced", "rejected")))
        )
        or 0
    )
    feedback = {"complaint": 0, "unsubscribe": 0}
    for kind, attrs in s.execute(
        select(Fact.kind, Fact.attributes).where(
            Fact.kind.in_(("notify.complaint", "notify.unsubscribe")),
            Fact.created_at >= send.created_at,
        )
    ):
        if str((attrs or {}).get("send")) == str(send.id):
            feedback[kind.split(".", 1)[1]] += 1
    rates = {
        "ineligible": states.get("ineligible", 0) / total if total else 0.0,
        "bounce": bounced / (delivered + failed) if delivered + failed else 0.0,
        "complaint": feedback["complaint"] / delivered if delivered else 0.0,
        "unsubscribe": feedback["unsubscribe"] / delivered if delivered else 0.0,
    }
    return rates, total, delivered


def halt(
    runtime: Runtime, s: Session, send: Send, template: Template, failed: dict[str, Any]
) -> None:
    why = f"{failed['gate']} rate {failed['rate']:.4f} above {failed['threshold']:g}"
    done = s.execute(
        update(Send)
        .where(Send.id == send.id, Send.status == "running")
        .values(
            status="halted", halt_reason=why[:500], updated_at=utcnow(), version=send.version + 1
        )
    )
    if getattr(done, "rowcount", 0) != 1:
        s.rollback()
        return
    detail = {"send": send.id, "template": template.name, "version": template.version, **failed}
    # A signal (listed by GET /v1/signals?kind=send_gate_failed, shown in triage) and the
    # send's own ledger entry; no principal is accused: a halt names a send, not a culprit.
    signal = record_signal(
        s, runtime.ledger, kind="send_gate_failed", confidence="exact",
        summary=f"send {send.id} ({template.name} v{template.version}) halted at stage "
        f"{send.stage + 1}: {why}", evidence=detail, group=False, pieces=[],
    )  # fmt: skip
    event = Event("send_halted", "system", None, None, "notification", send_ref(send.id),
                  {**detail, "signal_id": signal.id})  # fmt: skip
    runtime.ledger.append(s, [event])
    s.commit()
    # The alert webhook is raised from the send_halted ledger entry (ops.alerts).
    runtime.metrics.notify_gate_failures.labels(str(failed.get("gate", "unknown"))).inc()
    log.warning(
        "send_halted", send=send.id, stage=send.stage, gate=failed.get("gate"),
        rate=failed.get("rate"), threshold=failed.get("threshold"), signal=signal.id,
    )  # fmt: skip


__all__ = ["gate", "gate_rates", "halt", "slice_of"]
