"""The send worker: stages, gates, the kill switch and at-most-once delivery through the relay.

``step`` drives one send as far as it can and returns how long to wait before it is called
again (a soak, a live lease of another worker, in-flight recipients to reconcile), or None
when the send is over. In-process and Dramatiq workers both call it (``notify.queue``).

Delivery goes through mailveil's own relay, as the template's owner service (SMTP AUTH with
a service key minted for this step and revoked after it), to the customer's alias for that
service (a disclosure, purpose "notification", ref = the template name), so the relay applies
its policy, rewrites, signs, delivers and ledgers the message.

At most once: a group of recipients is committed as ``delivering`` before any SMTP, and as
``delivered`` (with their ``send`` ledger entries) after. A recipient found ``delivering``
after a crash is looked up in the relay's ``relay_messages`` (read only): a message from the
service to that customer written after the attempt began means the relay took it (it writes
the row before it hands the message on), so it is recorded as delivered, never resent; no
row means the relay never accepted it, and it is sent again. The relay replaces the client's
Message-ID, so rows are matched by (service, customer, time), each row claimed by one
recipient at most.

Several workers split a stage: the send's lease holder is the stage's coordinator (it alone
decides soaks, gates, halts and the next stage, once per stage); it and any number of
helpers (``assist``, queued by the coordinator when a stage starts, each queueing one more
while there is work) claim batches of the stage's recipients (``notify.claims``), so no
recipient is taken by two workers. The coordinator closes the stage once no recipient of it
is pending or in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailveil.auth.keys import Role, issue_key, revoke_key
from mailveil.contacts.disclosures import DisclosureRequest, disclose_batch
from mailveil.contacts.models import Customer, Principal
from mailveil.db.base import utcnow
from mailveil.db.session import session_scope, writing
from mailveil.errors import InvalidInput
from mailveil.logs import get_logger
from mailveil.notify.audience import Entry, assess, evidence_context
from mailveil.notify.claims import claim_batch, claimable, outstanding, renew_claims
from mailveil.notify.feedback import unsubscribe_key, unsubscribe_url
from mailveil.notify.gates import gate, gate_rates, halt
from mailveil.notify.line import Flight, Line
from mailveil.notify.models import Recipient, Send, Template
from mailveil.notify.sends import stage_sizes
from mailveil.notify.settle import reconcile, record_settled
from mailveil.notify.templates import render, rule_of
from mailveil.notify.transmit import Outcome, Ready, message_bytes
from mailveil.runtime import Runtime

log = logging.getLogger("mailveil.notify")
_slog = get_logger("mailveil.notify")


# No folding: List-Unsubscribe's long URL would become encoded words (RFC 5322 allows lines
# of 998 octets; a subject is at most that).
GROUP = 20  # recipients per commit; also how often the kill switch is looked at
FINAL = ("completed", "halted", "killed")


class Stop(Exception):
    """The send was killed, halted or taken by another worker."""


def _now() -> datetime:
    return utcnow()


def _take_lease(session: Session, send: Send, worker: str, lease: float) -> float | None:
    """None when this worker holds the send, else seconds until another's lease lapses."""
    now = _now()
    if send.lease_owner not in (None, worker) and send.lease_until and send.lease_until > now:
        return max((send.lease_until - now).total_seconds(), 0.1)
    status = "running" if send.status == "ready" else send.status
    before = send.lease_owner
    done = session.execute(
        update(Send)
        .where(Send.id == send.id, Send.version == send.version)
        .values(
            lease_owner=worker,
            lease_until=now + timedelta(seconds=lease),
            status=status,
            version=send.version + 1,
            updated_at=now,
        )
    )
    if getattr(done, "rowcount", 0) != 1:
        session.rollback()
        return 0.2
    if before not in (None, worker):
        # Taken over from a coordinator whose lease lapsed: its claims lapse with it (its
        # batches are claimed again, its in-flight ones reconciled), as a helper's do.
        session.execute(
            update(Recipient)
            .where(
                Recipient.send_id == send.id,
                Recipient.claimed_by == before,
                Recipient.state.in_(("pending", "delivering")),
            )
            .values(claim_until=now)
        )
    return None


def _renew(session: Session, send_id: int, worker: str, lease: float) -> None:
    """Keep the lease; raise Stop if the send was killed or another worker holds it. Commits
    what the caller read first (see ``writing``: the step reads before it renews)."""
    writing(session)
    done = session.execute(
        update(Send)
        .where(Send.id == send_id, Send.lease_owner == worker, Send.status == "running")
        .values(lease_until=_now() + timedelta(seconds=lease))
    )
    if getattr(done, "rowcount", 0) != 1:
        session.rollback()
        raise Stop
    session.commit()


def _release(runtime: Runtime, send_id: int, worker: str, wait: float | None) -> None:
    """Over: let the lease go. Waiting: keep it until the caller's next step is due plus a
    lease, so the same caller (a thread, a chain of Dramatiq messages) takes the send back
    and nobody else does while it lives; when it dies, the lease lapses and the worker's
    scheduler drives the send again (``worker.jobs.lapsed_sends``)."""
    if wait is None:
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
    else:
        lease = runtime.settings.notify_lease_seconds
        values = {"lease_until": _now() + timedelta(seconds=wait + lease)}
    with session_scope(runtime.session_factory) as s:
        s.execute(
            update(Send).where(Send.id == send_id, Send.lease_owner == worker).values(**values)
        )


def _step_done(runtime: Runtime, send: Send, wait: float | None, result: str) -> None:
    """One ``send_step`` log line and count per worker step (ids and counts only)."""
    runtime.metrics.notify_steps.labels(result).inc()
    _slog.info(
        "send_step", send=send.id, status=send.status, stage=send.stage, result=result,
        next_in_seconds=wait,
    )  # fmt: skip


def release(runtime: Runtime, send_id: int, worker: str) -> None:
    """Let the send go now (a worker stopping on purpose)."""
    _release(runtime, send_id, worker, None)


def step(
    runtime: Runtime, send_id: int, worker: str, assist: Callable[[], None] | None = None
) -> float | None:
    """Drive the send; seconds to wait before the next call, or None when it is over.
    ``assist``: queue a helper that joins the stage under way (a Dramatiq message)."""
    with runtime.session_factory() as s:
        writing(s)  # (every read-then-write of the step waits its turn on SQLite, see writing)
        send = s.get(Send, send_id)
        if send is None or send.status in FINAL or send.status in ("awaiting_approval", "creating"):
            return None
        wait = _take_lease(s, send, worker, runtime.settings.notify_lease_seconds)
        if wait is not None:
            return wait
        s.commit()
        s.refresh(send)
        template = s.get(Template, send.template_id)
        assert template is not None
        owner = s.get(Principal, template.owner_id)
        assert owner is not None
        key = issue_key(s, Role.SERVICE, principal_id=owner.id, label=f"notify {worker}")
        s.commit()
        result: float | None = None
        try:
            result = _drive(runtime, s, send, template, owner, worker, key.token, assist)
            _step_done(runtime, send, result, "waiting" if result is not None else "over")
        except Stop:
            result = None
            _step_done(runtime, send, None, "stopped")
        finally:
            s.rollback()
            writing(s)
            revoke_key(s, key.key.key_id)
            s.commit()
            _release(runtime, send_id, worker, result)
        return result


def cutoff_of(s: Session, send: Send, stage: int | None = None) -> tuple[int, int] | None:
    """The last recipient (bucket, id) of ``stage`` (default: the stage under way); None when
    there is none: no recipients, or past the last stage (the coordinator commits that before
    it marks the send completed, and a helper may look in between)."""
    index = send.stage if stage is None else stage
    if index >= len(send.stages):
        return None
    total = s.scalar(select(func.count()).where(Recipient.send_id == send.id)) or 0
    if total == 0:
        return None
    floor = int(send.thresholds.get("min_stage", 1))
    size = stage_sizes(floor, total, list(send.stages))[index]
    row = s.execute(
        select(Recipient.bucket, Recipient.id)
        .where(Recipient.send_id == send.id)
        .order_by(Recipient.bucket, Recipient.id)
        .offset(size - 1)
        .limit(1)
    ).first()
    assert row is not None
    return int(row[0]), int(row[1])


def _drive(
    runtime: Runtime,
    s: Session,
    send: Send,
    template: Template,
    owner: Principal,
    worker: str,
    token: str,
    assist: Callable[[], None] | None = None,
) -> float | None:
    wait = reconcile(runtime, s, send, template, owner)
    if wait:
        return wait
    lease = runtime.settings.notify_lease_seconds

    def renew() -> None:
        _renew(s, send.id, worker, lease)

    def look() -> None:  # before a group goes to the relay: a read (renewed at its claim)
        row = s.execute(select(Send.status, Send.lease_owner).where(Send.id == send.id)).first()
        s.commit()
        if row is None or row[0] != "running" or row[1] != worker:
            raise Stop

    while send.stage < len(send.stages):
        cutoff = cutoff_of(s, send)
        if cutoff is None:
            break
        if send.stage_done_at is None:
            if assist is not None and claimable(s, send.id, cutoff):
                assist()
            result = deliver_batches(runtime, s, send, template, owner, worker, token, cutoff,
                                     renew, look)  # fmt: skip
            if result is not None:
                return result
            writing(s)
            if outstanding(s, send.id, cutoff):
                return 0.3  # helpers' batches still in flight (or a dead one's to reconcile)
            s.execute(update(Send).where(Send.id == send.id).values(stage_done_at=_now()))
            s.commit()
            s.refresh(send)
        assert send.stage_done_at is not None
        remaining = (
            send.stage_done_at + timedelta(seconds=send.soak_seconds) - _now()
        ).total_seconds()
        if remaining > 0:
            return min(remaining, 5.0)
        writing(s)
        failed = gate(s, send, cutoff)
        if failed is not None:
            halt(runtime, s, send, template, failed)
            return None
        s.execute(
            update(Send)
            .where(Send.id == send.id, Send.status == "running")
            .values(stage=send.stage + 1, stage_done_at=None, updated_at=_now())
        )
        s.commit()
        s.refresh(send)
        if send.status != "running":
            return None
    writing(s)
    s.execute(
        update(Send)
        .where(Send.id == send.id, Send.status == "running")
        .values(status="completed", updated_at=_now(), version=send.version + 1)
    )
    s.commit()
    return None


# -- delivery ----------------------------------------------------------------------------


def deliver_batches(
    runtime: Runtime,
    s: Session,
    send: Send,
    template: Template,
    owner: Principal,
    worker: str,
    token: str,
    cutoff: tuple[int, int],
    check: Callable[[], None],
    look: Callable[[], None] | None = None,
) -> float | None:
    """Claim and deliver batches of the stage until none is left to claim (None), or the
    relay connection broke (seconds to wait). ``check`` runs before each batch is claimed and
    ``look`` (default ``check``; a read) before it goes to the relay: either raises Stop when
    this worker must stop (killed, halted, its lease gone).

    Pipelined (issue 17): group N is on the wire (``notify.line``, its own thread and
    connection) while this thread records group N-1 and claims and prepares group N+1, which
    is committed ``delivering`` before it is handed over, as every group is before any of
    its bytes go. However the loop ends, the group on the wire is waited for and recorded,
    and a prepared group never handed over (no byte of it sent) goes back to pending."""
    deferrals: dict[int, int] = {}
    lease = runtime.settings.notify_lease_seconds
    look = look or check
    line = Line(runtime, token, worker, s, runtime.settings.notify_relay_connections)
    flight: Flight | None = None  # handed to the line, not recorded yet
    staged: list[Ready] = []  # committed "delivering", not handed to the line
    last: Outcome | None = None
    try:
        while True:
            check()
            ids = claim_batch(s, send.id, cutoff, worker, lease, GROUP)
            if not ids:
                break
            rows = s.execute(
                select(
                    Recipient.id,
                    Recipient.customer_id,
                    Recipient.fact_ids,
                    Recipient.language,
                    Customer.external_id,
                )
                .join(Customer, Customer.id == Recipient.customer_id)
                .where(Recipient.id.in_(ids), Recipient.state == "pending")
                .order_by(Recipient.bucket, Recipient.id)
            ).all()
            staged = _prepare(runtime, s, send, template, owner, rows, worker)
            if not staged:
                continue
            staged_at = time.monotonic()
            wires = [(r, message_bytes(runtime, send, template, r)) for r in staged]
            if flight is not None:
                staged_at = _await(s, flight, staged, staged_at, worker, lease)
                if flight.future.result().broken:  # (raises what failed the line, if it did)
                    break
                kept = {r.recipient_id for r in staged}
                wires = [w for w in wires if w[0].recipient_id in kept]
            look()
            handed = line.send(wires, staged_at) if wires else None
            staged = []
            # The group just handed over is the one in flight before the last one is recorded:
            # if recording fails, the finally below still waits for it and records it.
            landed, flight = flight, handed
            if landed is not None:
                record_settled(runtime, s, send, template, owner, landed.ready,
                               landed.future.result(), deferrals)  # fmt: skip
            if flight is not None and flight.future.done() and flight.future.result().broken:
                break  # (the line sends in this thread: it is done already)
    finally:
        try:
            last = _land(runtime, s, send, template, owner, worker, flight, staged, deferrals)
        finally:
            line.close()
    return 5.0 if last is not None and last.broken else None


def _await(
    s: Session, flight: Flight, staged: list[Ready], staged_at: float, worker: str, lease: float
) -> float:
    """Wait for the group on the line; meanwhile keep the claims of the next one (``staged``,
    whose ones lost are dropped from it in place). When its claims were last renewed."""
    every = lease / 4
    while True:
        try:
            flight.future.exception(timeout=max(staged_at + every - time.monotonic(), 0.0))
            return staged_at
        except TimeoutError:
            held = renew_claims(s, [r.recipient_id for r in staged], worker, lease)
            staged[:] = [r for r in staged if r.recipient_id in held]
            staged_at = time.monotonic()


def _land(
    runtime: Runtime,
    s: Session,
    send: Send,
    template: Template,
    owner: Principal,
    worker: str,
    flight: Flight | None,
    staged: list[Ready],
    deferrals: dict[int, int],
) -> Outcome | None:
    """However the loop ended: wait for the group on the line and record it (one whose line
    failed is left ``delivering``, reconciled once its claims lapse, as after a crash), and
    put a staged group, none of it sent, back to pending (only rows this worker still holds).
    The outcome of the group on the line, if it has one."""
    s.rollback()
    outcome = None
    if flight is not None and flight.future.exception() is None:
        outcome = flight.future.result()
        record_settled(runtime, s, send, template, owner, flight.ready, outcome, deferrals)
    if staged:
        s.execute(
            update(Recipient)
            .where(
                Recipient.id.in_(sorted(r.recipient_id for r in staged)),
                Recipient.state == "delivering",
                Recipient.claimed_by == worker[:64],
            )
            .values(state="pending", claimed_by=None, claim_until=None)
        )
        s.commit()
    return outcome


def _prepare(
    runtime: Runtime,
    s: Session,
    send: Send,
    template: Template,
    owner: Principal,
    rows: Any,
    worker: str,
) -> list[Ready]:
    """Re-check every recipient now (evidence, suppressions, caps), render, disclose the
    aliases, and commit the group as ``delivering``. Returns what may be sent: only the
    recipients this worker still held (its claim) when it moved them."""
    settings = runtime.settings
    now = _now()
    correcting = send.corrects_id is not None
    rule = None if correcting else rule_of(template)
    key = unsubscribe_key(settings)
    entries = [Entry(r.external_id, tuple(r.fact_ids) if r.fact_ids else None) for r in rows]
    verdicts = assess(s, settings, template, rule, entries, now)
    drop: dict[int, tuple[str, str]] = {}
    keep: list[tuple[Any, dict[str, Any]]] = []
    for row, verdict in zip(rows, verdicts, strict=True):
        if verdict.state != "eligible":
            drop[row.id] = (verdict.state, verdict.reason)
            continue
        context: dict[str, Any] = (
            evidence_context(rule, verdict.evidence, row.external_id)
            if rule is not None
            else {"customer": {"id": row.external_id}, "facts": {}}
        )
        context.update(
            send={"id": send.id, "corrects": send.corrects_id},
            unsubscribe_url=unsubscribe_url(settings, key, send.id, row.customer_id),
        )
        keep.append((row, context))
    rendered: list[tuple[Any, str, str]] = []
    for row, context in keep:
        try:
            subject, body = render(template, context, row.language)
        except InvalidInput as exc:
            drop[row.id] = ("ineligible", exc.detail[:200])
            continue
        rendered.append((row, subject, body))
    writing(s)  # the reads are done: the writes wait their turn on SQLite
    results = disclose_batch(
        s,
        settings=settings,
        policy=runtime.policy,
        ledger=runtime.ledger,
        requests=[
            DisclosureRequest(row.customer_id, owner.id, "notification", template.name)
            for row, _, _ in rendered
        ],
        actor=send.created_by,
    )
    ready: list[Ready] = []
    for (row, subject, body), result in zip(rendered, results, strict=True):
        if not result.allowed or result.alias is None:
            drop[row.id] = ("failed", f"disclosure denied: {result.reason}"[:200])
            continue
        url = unsubscribe_url(settings, key, send.id, row.customer_id)
        ready.append(Ready(row.id, row.customer_id, result.alias, subject, body,
                           list(row.fact_ids), url, row.language or template.language))  # fmt: skip
    mine = (Recipient.state == "pending", Recipient.claimed_by == worker[:64])
    for rid, (state, reason) in drop.items():
        s.execute(
            update(Recipient).where(Recipient.id == rid, *mine).values(state=state,
                                                                        reason=reason or None)
        )  # fmt: skip
    moved: set[int] = set()
    if ready:
        until = now + timedelta(seconds=settings.notify_lease_seconds)
        moved = set(
            s.scalars(
                update(Recipient)
                .where(Recipient.id.in_([r.recipient_id for r in ready]), *mine)
                .values(state="delivering", attempt_at=now, claim_until=until)
                .returning(Recipient.id)
            )
        )
    s.commit()  # "delivering" is durable before any byte goes to the relay
    return [r for r in ready if r.recipient_id in moved]


__all__ = [
    "cutoff_of",
    "deliver_batches",
    "gate",
    "gate_rates",
    "release",
    "step",
]
