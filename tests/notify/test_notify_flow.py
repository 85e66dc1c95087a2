"""Sends end to end through the real relay into a sink: evidence, stages, gates, the kill
switch, at-most-once across a lost worker, and corrections from the ledger."""

from __future__ import annotations

from notify_kit import GIFT_TEMPLATE, SORRY_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import select

from mailveil.db.session import write_session_factory
from mailveil.ledger.models import LedgerEntry
from mailveil.notify.audience import Entry
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import correction, counts_of, create_send, get_send


def _entries(env: NotifyEnv) -> list[Entry]:
    return [Entry(f"c{n}", None) for n in sorted(env.customers)]


def test_eligible_send_completes_through_the_relay(notify_env: NotifyEnv) -> None:
    env = notify_env
    session = env.session()
    add_facts(session, gift_facts([1, 2, 3]))
    template = register(session, env, GIFT_TEMPLATE)
    entries = [Entry(f"c{n}", None) for n in (1, 2, 3)]
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=entries, actor="apikey:a")  # fmt: skip
    session.commit()
    assert send.status == "ready", send.approval_reason
    run_to_end(env.runtime, send.id)
    session.expire_all()
    assert get_send(session, send.id).status == "completed"
    assert env.delivered_numbers() == [1, 2, 3]
    assert all("teddy bear" not in s for s in env.sink.subjects())
    entries_ = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "send")).all()
    assert sorted(e.subject for e in entries_) == sorted(
        f"customer:{env.customer(n).id}" for n in (1, 2, 3)
    )


def test_glitch_halts_at_first_stage_and_correction_matches(
    notify_env: NotifyEnv,
) -> None:
    env = notify_env
    session = env.session()
    add_facts(session, gift_facts([2, 5]))
    template = register(session, env, GIFT_TEMPLATE)
    register(session, env, SORRY_TEMPLATE)
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=_entries(env), actor="apikey:a")  # fmt: skip
    session.commit()
    run_to_end(env.runtime, send.id)
    session.expire_all()
    done = get_send(session, send.id)
    assert done.status == "halted" and done.stage == 0, done.halt_reason
    delivered = env.delivered_numbers()
    assert set(delivered) <= {2, 5}
    session.commit()
    # As the API's correction route does: a write session (BEGIN IMMEDIATE on SQLite). The
    # relay may still be committing its last rows; a deferred read-then-write would fail at
    # once with "database is locked" instead of waiting its turn.
    writer = write_session_factory(env.session_factory)()
    env.opened.append(writer)
    fix = correction(
        writer,
        env.settings,
        env.runtime.ledger,
        original_id=send.id,
        template_name=SORRY_TEMPLATE["name"],
        version=None,
        actor="apikey:a",
    )
    writer.commit()
    assert counts_of(writer, fix.id).get("pending", 0) == len(delivered)
