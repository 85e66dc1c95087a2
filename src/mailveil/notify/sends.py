"""Sends: preview, create (recipients assessed and stored), approve, kill, status, correct.

A send's recipients are assessed once when it is created (and again, batch by batch, just
before delivery); only ``eligible`` ones are ever stored as ``pending``. The blast-radius
guard holds a send in ``awaiting_approval`` until a second person approves it. Delivery is
``notify.worker``'s; this module never talks SMTP.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, Forbidden, InvalidInput, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry
from mailveil.notify.audience import (
    Entry,
    assess,
    batched,
    evidence_context,
    in_languages,
    rule_population,
    screener_for,
)
from mailveil.notify.bulk import tally_all
from mailveil.notify.guard import blast_radius, halt_forecast, targeting
from mailveil.notify.models import OPEN_SEND_STATUSES, Recipient, Send, Template
from mailveil.notify.tally import Tally
from mailveil.notify.templates import (
    expected_volume,
    get_template,
    render,
    required_rule,
    sendable,
)

KIND_SEND = "send"  # one ledger entry per delivered recipient (notify.worker)
_recipients = cast(Table, Recipient.__table__)


def send_ref(send_id: int) -> str:
    return f"send:{send_id}"


def bucket(send_id: int, customer_id: int) -> int:
    digest = hashlib.blake2b(f"{send_id}:{customer_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1  # 31 bits: fits a signed INTEGER


def stages_of(settings: Settings) -> list[float]:
    return [float(x) for x in settings.notify_stages.split(",")]


def stage_sizes(floor: int, total: int, stages: list[float]) -> list[int]:
    """Cumulative recipients after each stage: at least the minimum stage, at most all."""
    return [min(total, max(floor, math.ceil(f * total))) for f in stages]


def preview(
    session: Session,
    settings: Settings,
    template: Template,
    entries: Iterable[Entry],
    *,
    source: str = "list",
) -> dict[str, Any]:
    """A dry run: nothing is stored, nothing is sent. Counts, reasons, overlaps, samples."""
    rule = required_rule(template)
    entries = in_languages(entries, template)  # a language it lacks is refused, not swapped
    now = utcnow()
    tally = Tally()
    languages: Counter[str] = Counter()
    translated = set(template.translations or {})
    rendered: list[dict[str, Any]] = []
    shown_languages: set[str] = set()
    screener = screener_for(session, settings, template, rule, now)
    pairs = tally_all(session, settings, template, rule, entries, now, screener, tally,
                      from_database=source == "segment")  # fmt: skip
    for eligible in pairs:
        for entry, a in eligible:
            language = entry.language if entry.language in translated else template.language
            languages[language] += 1
            # Up to three samples, and one in each language the audience uses.
            if len(rendered) < 3 or language not in shown_languages:
                shown_languages.add(language)
                context = evidence_context(rule, a.evidence, a.external_id)
                # No send id yet: the sample says so instead of rendering "None".
                context.update(send={"id": "(assigned when created)", "corrects": None},
                               unsubscribe_url=_unsubscribe(settings, 0))  # fmt: skip
                try:
                    subject, body = render(template, context, language)
                    rendered.append({"customer": a.external_id, "language": language,
                                     "subject": subject, "body": body})  # fmt: skip
                except InvalidInput as exc:
                    rendered.append({"customer": a.external_id, "language": language,
                                     "error": exc.detail})  # fmt: skip
    total = tally.total
    counts = tally.by_state()
    samples = tally.samples
    expected = expected_volume(session, template)
    needs, why = blast_radius(settings, counts["eligible"], expected)
    plan = stage_sizes(settings.notify_min_stage_size, total, stages_of(settings))
    aim = targeting(settings, total, counts["eligible"], counts["ineligible"],
                    rule_population(session, rule, now))  # fmt: skip
    if needs and why:
        why = f"{why}; {aim['summary']}"
    return {
        "template": {"name": template.name, "version": template.version},
        "audience_source": source,
        "audience": total,
        "counts": counts,
        "ineligible_rate": (counts["ineligible"] / total) if total else 0.0,
        "reasons": tally.reasons(),
        "samples": samples,
        "rendered": rendered,
        "sensitivity": template.sensitivity,
        "expected_volume": expected,
        "audience_vs_expected": (counts["eligible"] / expected) if expected else None,
        "needs_second_approver": needs,
        "approval_reason": why,
        "stages": plan,
        "would_halt_at_first_stage": aim["verdict"] == "mis-targeted",
        "targeting": aim,
        "languages": dict(languages.most_common()),
    }


def _unsubscribe(settings: Settings, send_id: int) -> str:
    return f"https://{settings.relay_domain}/unsubscribe/{send_id}"


def _insert(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(make(_recipients).on_conflict_do_nothing(), rows)


def create_send(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    *,
    template: Template,
    entries: Iterable[Entry],
    actor: str,
    corrects: Send | None = None,
    commit: bool = False,
) -> Send:
    """Store a send and its assessed recipients (batch by batch; ``commit`` commits each
    batch so a huge audience never sits in one transaction). Ineligible, suppressed and
    capped recipients are stored with their reason (the gates count them)."""
    sendable(template)
    entries = in_languages(entries, template)  # a language it lacks is refused, not swapped
    stages = stages_of(settings)
    now = utcnow()
    send = Send(
        template_id=template.id,
        corrects_id=corrects.id if corrects is not None else None,
        status="creating",
        stages=stages,
        soak_seconds=settings.notify_soak_seconds,
        thresholds={
            "ineligible": settings.notify_max_ineligible_rate,
            "bounce": settings.notify_max_bounce_rate,
            "complaint": settings.notify_max_complaint_rate,
            "unsubscribe": settings.notify_max_unsubscribe_rate,
            "min_stage": settings.notify_min_stage_size,
        },
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(send)
    session.flush()
    rule = None if corrects is not None else required_rule(template)
    counts: Counter[str] = Counter()
    translated = set(template.translations or {})
    screener = screener_for(session, settings, template, rule, now)
    for batch in batched(entries, settings.notify_batch_size):
        rows = []
        verdicts = assess(session, settings, template, rule, batch, now, screener=screener)
        for entry, a in zip(batch, verdicts, strict=True):
            counts["audience"] += 1
            if a.customer_id is None:
                counts["unknown"] += 1
                continue
            state = "pending" if a.state == "eligible" else a.state
            counts[state] += 1
            rows.append(
                {
                    "send_id": send.id,
                    "customer_id": a.customer_id,
                    "bucket": bucket(send.id, a.customer_id),
                    "state": state,
                    "reason": a.reason or None,
                    "fact_ids": list(a.fact_ids),
                    "language": entry.language if entry.language in translated else None,
                }
            )
        _insert(session, rows)
        if commit:
            session.commit()
    stored = dict(
        session.execute(
            select(Recipient.state, func.count())
            .where(Recipient.send_id == send.id)
            .group_by(Recipient.state)
        ).all()
    )
    send.audience = sum(stored.values()) + counts["unknown"]
    send.eligible = stored.get("pending", 0)
    if corrects is None:
        assert rule is not None
        send.expected_volume = expected_volume(session, template)
        needs, why = blast_radius(settings, send.eligible, send.expected_volume)
        send.targeting = targeting(settings, send.audience, send.eligible,
                                   stored.get("ineligible", 0) + counts["unknown"],
                                   rule_population(session, rule, now))  # fmt: skip
        if needs and why:
            why = f"{why}; {send.targeting['summary']}"[:500]
    else:
        needs, why = False, None
    send.needs_approval, send.approval_reason = needs, why
    send.status = "awaiting_approval" if needs else "ready"
    detail: dict[str, Any] = {
        "send": send.id,
        "template": template.name,
        "version": template.version,
        "audience": send.audience,
        "eligible": send.eligible,
        "needs_approval": needs,
    }
    if corrects is not None:
        detail["corrects"] = corrects.id
    ledger.append(
        session,
        [Event("send_created", actor, None, None, "notification", send_ref(send.id), detail)],
    )
    session.flush()
    return send


def get_send(session: Session, send_id: int) -> Send:
    row = session.get(Send, send_id)
    if row is None or row.status == "creating":
        raise NotFound(f"no send {send_id}")
    return row


def _cas(session: Session, send: Send, **values: Any) -> None:
    """Change the send if nobody else did since it was read (the worker races us)."""
    done = session.execute(
        update(Send)
        .where(Send.id == send.id, Send.version == send.version)
        .values(version=send.version + 1, updated_at=utcnow(), **values)
    )
    if getattr(done, "rowcount", 0) != 1:
        session.rollback()
        raise Conflict(f"send {send.id} changed meanwhile; read it again")
    session.refresh(send)


def approve(
    session: Session,
    ledger: Ledger,
    send_id: int,
    *,
    actor: str,
    despite_forecast: bool = False,
) -> Send:
    """The second person's approval. When the stored assessment says the first stage would
    halt, the approver must say they saw it (``despite_forecast``)."""
    send = get_send(session, send_id)
    if actor == send.created_by:
        raise Forbidden("the send's creator cannot approve it: a second person must")
    if send.status != "awaiting_approval":
        raise Conflict(f"send {send_id} is {send.status}, not awaiting approval")
    forecast = halt_forecast(send, counts_of(session, send_id))
    if forecast is not None and not despite_forecast:
        raise HaltForecast(
            f"send {send_id} would halt at its first stage: {forecast['ineligible']} of "
            f"{forecast['recipients']} recipients ({forecast['rate']:.1%}) are not eligible, "
            f"above the {forecast['threshold']:g} gate; check the audience, or approve "
            "despite the forecast"
        )
    _cas(session, send, status="ready", approved_by=actor)
    ledger.append(
        session,
        [Event("send_approved", actor, None, None, "notification", send_ref(send_id), {
            "send": send_id, "reason": send.approval_reason,
            "despite_forecast": forecast is not None,
        })],
    )  # fmt: skip
    return send


class HaltForecast(Conflict):
    code = "send-would-halt"
    title = "The send would halt at its first stage"


def check_startable(session: Session, send_id: int) -> Send:
    send = get_send(session, send_id)
    if send.status == "awaiting_approval":
        raise Conflict(f"send {send_id} needs a second approver: {send.approval_reason}")
    if send.status not in ("ready", "running"):
        raise Conflict(f"send {send_id} is {send.status}")
    return send


def kill(session: Session, ledger: Ledger, send_id: int, *, actor: str) -> Send:
    """The kill switch: the worker sees it before its next group of recipients.

    On SQLite a transaction that read before the worker (or the relay) committed cannot
    write; the kill must not fail for that, so it starts over on a fresh snapshot (the
    session is rolled back: call it with no other pending work)."""
    for _attempt in range(100):
        try:
            return _kill_once(session, ledger, send_id, actor=actor)
        except OperationalError as exc:
            if "locked" not in str(exc.orig):
                raise
            session.rollback()
            time.sleep(0.02)
    raise Conflict(f"send {send_id} could not be reached to kill it; try again")


def kill_sends_of(session: Session, ledger: Ledger, principal_id: int, *, actor: str) -> int:
    """Kill every open send of the templates a (service) principal owns: containment of a
    suspended principal. Does not commit; the number killed."""
    open_ids = session.scalars(
        select(Send.id)
        .join(Template, Template.id == Send.template_id)
        .where(Template.owner_id == principal_id, Send.status.in_(OPEN_SEND_STATUSES))
    ).all()
    for send_id in open_ids:
        _kill_once(session, ledger, send_id, actor=actor)
    return len(open_ids)


def _kill_once(session: Session, ledger: Ledger, send_id: int, *, actor: str) -> Send:
    send = get_send(session, send_id)
    if send.status not in OPEN_SEND_STATUSES:
        raise Conflict(f"send {send_id} is already {send.status}")
    for _ in range(5):
        try:
            _cas(session, send, status="killed", stopped_by=actor, halt_reason="killed")
            break
        except Conflict:
            send = get_send(session, send_id)
            if send.status not in OPEN_SEND_STATUSES:
                raise
    else:
        raise Conflict(f"send {send_id} is changing too fast to kill; try again")
    ledger.append(
        session,
        [Event("send_killed", actor, None, None, "notification", send_ref(send_id),
               {"send": send_id, "stage": send.stage})],
    )  # fmt: skip
    return send


def counts_of(session: Session, send_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Recipient.state, func.count())
        .where(Recipient.send_id == send_id)
        .group_by(Recipient.state)
    ).all()
    return {state: int(n) for state, n in rows}


def stage_label(stage: int, stages: int) -> str:
    """Which stage a send is at, for people: past the last one it is done, not "5 of 4"."""
    return f"all {stages} done" if stage >= stages else f"{stage + 1} of {stages}"


def send_view(session: Session, send: Send) -> dict[str, Any]:
    template = session.get(Template, send.template_id)
    assert template is not None
    counts = counts_of(session, send.id)
    return {
        "id": send.id,
        "template": {"name": template.name, "version": template.version},
        "corrects": send.corrects_id,
        "status": send.status,
        "audience": send.audience,
        "eligible": send.eligible,
        "expected_volume": send.expected_volume,
        "needs_approval": send.needs_approval,
        "approval_reason": send.approval_reason,
        "approved_by": send.approved_by,
        "stages": send.stages,
        "stage": send.stage,
        "stage_label": stage_label(send.stage, len(send.stages)),
        "soak_seconds": send.soak_seconds,
        "thresholds": send.thresholds,
        "halt_reason": send.halt_reason,
        "stopped_by": send.stopped_by,
        "targeting": send.targeting,
        "forecast": halt_forecast(send, counts) if send.status == "awaiting_approval" else None,
        "recipients": counts,
        "created_by": send.created_by,
        "created_at": send.created_at.isoformat(),
        "updated_at": send.updated_at.isoformat(),
    }


def delivered_customers(session: Session, send: Send) -> Iterator[int]:
    """Customer ids the ledger records as sent by ``send`` (kind "send", this send's ref),
    in ledger order; read from the ledger, not from notify's own tables."""
    since = int(send.created_at.timestamp() * 1_000_000) - 1_000_000
    after = -1
    while True:
        rows = session.execute(
            select(LedgerEntry.seq, LedgerEntry.subject)
            .where(
                LedgerEntry.kind == KIND_SEND,
                LedgerEntry.time_us >= since,
                LedgerEntry.ref == send_ref(send.id),
                LedgerEntry.seq > after,
            )
            .order_by(LedgerEntry.seq)
            .limit(5000)
        ).all()
        if not rows:
            return
        for seq, subject in rows:
            after = seq
            if subject and subject.startswith("customer:"):
                yield int(subject.split(":", 1)[1])


def correction(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    *,
    original_id: int,
    template_name: str,
    version: int | None,
    actor: str,
    commit: bool = False,
    include_unconfirmed: bool = False,
) -> Send:
    """A send of ``template_name`` to exactly the customers the ledger says got the original;
    with ``include_unconfirmed`` (an operator's decision), also those whose delivery was
    never confirmed after a crash (``notify.settle``)."""
    original = get_send(session, original_id)
    if original.status in ("awaiting_approval", "ready"):
        raise Conflict(f"send {original_id} has not sent anything to correct")
    template = get_template(session, template_name, version)
    from mailveil.contacts.models import Customer

    def customers() -> Iterator[int]:
        yield from delivered_customers(session, original)
        if include_unconfirmed:
            yield from session.scalars(
                select(Recipient.customer_id)
                .where(Recipient.send_id == original.id, Recipient.state == "unconfirmed")
                .order_by(Recipient.id)
            )

    def entries() -> Iterator[Entry]:
        for part in batched_ids(customers(), 2000):
            rows = session.execute(
                select(Customer.id, Customer.external_id).where(Customer.id.in_(part))
            )
            found = {cid: ext for cid, ext in rows}
            for cid in part:
                if cid in found:
                    yield Entry(found[cid], None)

    return create_send(
        session,
        settings,
        ledger,
        template=template,
        entries=list(entries()) if not commit else entries(),
        actor=actor,
        corrects=original,
        commit=commit,
    )


def batched_ids(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    part: list[int] = []
    for i in ids:
        part.append(i)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


__all__ = [
    "KIND_SEND",
    "HaltForecast",
    "approve",
    "blast_radius",
    "bucket",
    "check_startable",
    "correction",
    "counts_of",
    "create_send",
    "delivered_customers",
    "get_send",
    "halt_forecast",
    "kill",
    "preview",
    "send_ref",
    "send_view",
    "stage_label",
    "stage_sizes",
    "stages_of",
    "targeting",
]
