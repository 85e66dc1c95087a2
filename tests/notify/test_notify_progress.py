"""What the console shows of a send: each stage with the gates measured exactly as the
worker gates on them, the halt forecast from the stored assessment, and recipients with
their evidence or the reason they are refused. On SQLite and PostgreSQL, through the relay."""

from __future__ import annotations

from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register

from mailveil.notify.audience import Entry
from mailveil.notify.progress import forecast_of, recipient_sample, stage_progress
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import create_send, get_send


def test_a_halted_send_shows_the_gate_that_stopped_it(notify_env: NotifyEnv) -> None:
    env = notify_env
    session = env.session()
    add_facts(session, gift_facts([2, 5]))
    template = register(session, env, GIFT_TEMPLATE)
    entries = [Entry(f"c{n}", None) for n in sorted(env.customers)]
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=entries, actor="apikey:a")  # fmt: skip
    session.commit()
    forecast = forecast_of(session, send)
    assert forecast is not None and forecast["ineligible"] == 8 and forecast["recipients"] == 10
    assert stage_progress(session, send)[0].state == "waiting"
    session.commit()  # end the read, as a console request does, before the worker writes
    run_to_end(env.runtime, send.id)
    session.expire_all()
    done = get_send(session, send.id)
    assert done.status == "halted"
    stages = stage_progress(session, done)
    assert stages[0].state == "stopped here"
    assert stages[0].rates["ineligible"] == 0.8  # what the worker halted on
    assert stages[0].rates["ineligible"] > done.thresholds["ineligible"]
    assert all(not s.rates for s in stages[1:])
    shown = recipient_sample(session, send.id, state="delivered")
    assert sorted(r["customer"] for r in shown) == ["c2", "c5"]
    assert all(r["evidence"] and r["evidence"][0]["kind"] for r in shown)
    refused = recipient_sample(session, send.id, state="ineligible")
    assert len(refused) == 8 and all(r["reason"] for r in refused)
    assert not any("@" in str(r) for r in shown + refused)  # ids, never addresses
