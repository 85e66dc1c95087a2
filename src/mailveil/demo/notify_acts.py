"""Acts two and three: the breach notices reach exactly the affected customers, once; then
a registry-gift send aimed at every customer halts at its first stage and its correction
reaches exactly the people who got it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from mailveil.contacts.principals import create_principal
from mailveil.db.base import utcnow
from mailveil.db.session import session_scope
from mailveil.demo.harness import DemoEnv
from mailveil.demo.world import Market
from mailveil.incidents.notices import prepare_notices
from mailveil.notify.audience import Entry
from mailveil.notify.facts import ingest_batch
from mailveil.notify.models import Send
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import approve, correction, counts_of, create_send, preview
from mailveil.notify.templates import register_template

GIFT: dict[str, Any] = {
    "name": "registry-gift",
    "category": "transactional",
    "subject": "Someone bought a gift from your registry",
    "body": (
        "Hello,\n\nsomeone bought {{ facts.gift.item }} from your registry "
        "{{ facts.gift.registry_id }}.\n\nYour marketplace\n"
    ),
    "sensitivity": ["pregnancy"],
    "suppression_list": "baby-registry",
    "reviewer": "Rita Reviewer",
    "owner": "registry-notifier",
    "expected_volume": 100,
    "rule": {
        "require": [{"kind": "registry.gift_purchased", "as": "gift", "within_days": 7}],
        "owns": [{"fact": "gift", "attr": "registry_id", "kind": "registry.created"}],
    },
}
SORRY: dict[str, Any] = {
    "name": "registry-gift-correction",
    "category": "transactional",
    "subject": "About our earlier message",
    "body": "Hello,\n\nplease disregard our earlier message about a gift. We are sorry.\n",
    "owner": "registry-notifier",
    "rule": {"require": [{"kind": "registry.gift_purchased", "as": "gift"}]},
}


@dataclass
class NoticeResult:
    send_id: int | None = None
    affected: int = 0
    delivered_to: set[str] = field(default_factory=set)
    unaffected_reached: int = 0
    second_round_new: int = -1
    sample_subject: str = ""
    status: str = ""


@dataclass
class GlitchResult:
    audience: int = 0
    eligible: int = 0
    preview_halts: bool = False
    status: str = ""
    halt_reason: str = ""
    delivered_to: set[str] = field(default_factory=set)
    delivered_without_gift: int = 0
    correction_audience: int = 0
    corrected_to: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)


def _inbox_since(env: DemoEnv, start: int, subject: str) -> list[str]:
    out: list[str] = []
    for item in env.sink.received[start:]:
        if str(item.message()["Subject"] or "") == subject:
            out.extend(r.lower() for r in item.rcpt)
    return out


def run_notices(
    env: DemoEnv, market: Market, incident_id: int, affected: list[int]
) -> NoticeResult:
    out = NoticeResult(affected=len(affected))
    runtime = env.runtime
    with session_scope(runtime.session_factory) as session:
        notice = prepare_notices(
            session,
            settings=runtime.settings,
            ledger=runtime.ledger,
            incident_id=incident_id,
            actor="demo:privacy-officer",
        )
        out.send_id = notice.send_id
        if notice.send_id is not None and notice.status == "awaiting_approval":
            approve(session, runtime.ledger, notice.send_id, actor="demo:dpo")
    if out.send_id is None:
        return out
    start = env.sink.count()
    run_to_end(runtime, out.send_id, sleep=lambda _s: None)
    env.relay.flush()
    subject = "Important: a security incident involving your contact details"
    got = _inbox_since(env, start, subject)
    out.sample_subject = subject
    out.delivered_to = set(got)
    wanted = {market.addresses[c].lower() for c in affected}
    out.unaffected_reached = len(out.delivered_to - wanted)
    with session_scope(runtime.session_factory) as session:
        send = session.get(Send, out.send_id)
        out.status = send.status if send is not None else ""
        again = prepare_notices(
            session,
            settings=runtime.settings,
            ledger=runtime.ledger,
            incident_id=incident_id,
            actor="demo:privacy-officer",
        )
        out.second_round_new = again.new_customers
    return out


def run_glitch(env: DemoEnv, market: Market, *, share: float = 0.02, seed: int = 3) -> GlitchResult:
    out = GlitchResult()
    runtime = env.runtime
    rng = random.Random(seed)
    owners = rng.sample(market.customers, max(1, round(len(market.customers) * share)))
    when = (utcnow() - timedelta(days=1)).isoformat()
    with session_scope(runtime.session_factory) as session:
        create_principal(session, kind="service", external_id="registry-notifier")
        records: list[tuple[int, Any]] = []
        for n, c in enumerate(owners):
            reg = {"registry_id": f"R{c.id}"}
            records.append(
                (
                    2 * n + 1,
                    {
                        "id": f"reg-{c.id}",
                        "kind": "registry.created",
                        "customer": c.external_id,
                        "time": when,
                        "attributes": reg,
                    },
                )
            )
            records.append(
                (
                    2 * n + 2,
                    {
                        "id": f"gift-{c.id}",
                        "kind": "registry.gift_purchased",
                        "customer": c.external_id,
                        "time": when,
                        "attributes": {**reg, "item": "a wooden rattle"},
                    },
                )
            )
        ingest_batch(session, records)
        gift = register_template(session, runtime.settings, GIFT, actor="demo:registry-team")
        register_template(session, runtime.settings, SORRY, actor="demo:registry-team")
        everyone = [Entry(c.external_id, None) for c in market.customers]  # the glitch
        look = preview(session, runtime.settings, gift, everyone)
        out.preview_halts = bool(look.get("would_halt_at_first_stage"))
        send = create_send(
            session,
            runtime.settings,
            runtime.ledger,
            template=gift,
            entries=everyone,
            actor="demo:registry-job",
        )
        out.audience, out.eligible = send.audience, send.eligible
        send_id = send.id
        if send.status == "awaiting_approval":
            approve(session, runtime.ledger, send_id, actor="demo:lead")
    start = env.sink.count()
    run_to_end(runtime, send_id, sleep=lambda _s: None)
    env.relay.flush()
    got = _inbox_since(env, start, GIFT["subject"])
    out.delivered_to = set(got)
    gifted = {market.addresses[c.id].lower() for c in owners}
    out.delivered_without_gift = len(out.delivered_to - gifted)
    with session_scope(runtime.session_factory) as session:
        send_row = session.get(Send, send_id)
        assert send_row is not None
        out.status, out.halt_reason = send_row.status, send_row.halt_reason or ""
        out.counts = counts_of(session, send_id)
        fix = correction(
            session,
            runtime.settings,
            runtime.ledger,
            original_id=send_id,
            template_name=SORRY["name"],
            version=None,
            actor="demo:registry-team",
        )
        fix_id = fix.id
        out.correction_audience = fix.eligible
    start = env.sink.count()
    run_to_end(runtime, fix_id, sleep=lambda _s: None)
    env.relay.flush()
    out.corrected_to = set(_inbox_since(env, start, SORRY["subject"]))
    return out


def sent_sends(env: DemoEnv) -> int:
    with env.runtime.session_factory() as session:
        return len(session.scalars(select(Send.id)).all())


__all__ = ["GlitchResult", "NoticeResult", "run_glitch", "run_notices"]
