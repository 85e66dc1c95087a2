"""A claim that lapses after the mail went out but before the worker recorded it: the send's
coordinator reconciles the recipient from the relay's row (delivered) while the worker, slow
but alive, still holds its outcome. Both settle the same (send, recipient) in two sessions;
the ledger must get exactly one ``send`` entry each (one mail went out, one is recorded).
On SQLite (one file) and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import notify_kit as kit
import pytest
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import func, select, update

from dbkit import private_pg_engine
from mailveil.config import Settings
from mailveil.contacts.models import Principal
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.verify import verify_ledger
from mailveil.notify.audience import Entry
from mailveil.notify.models import Recipient, Send, Template
from mailveil.notify.sends import create_send
from mailveil.notify.settle import reconcile, record_outcome
from mailveil.notify.transmit import Outcome, Ready
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER, RelayMessage

CUSTOMERS = 6
SLOW = "worker-slow"


@pytest.fixture(params=["sqlite", "postgres"])
def env(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path, _pg_available: bool
) -> Iterator[NotifyEnv]:
    if request.param == "postgres":
        if not _pg_available:
            pytest.skip("PostgreSQL not reachable")
        with private_pg_engine("mv_lapse") as engine:
            upgrade(engine)
            tuned = kit.notify_settings(settings, notify_stages="1", notify_min_stage_size=1,
                                        notify_reconcile_after_seconds=2.0)  # fmt: skip
            yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS)
        return
    engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
    upgrade(engine)
    tuned = kit.notify_settings(settings.with_overrides(database_url=str(engine.url)),
                                notify_stages="1", notify_min_stage_size=1,
                                notify_reconcile_after_seconds=2.0)  # fmt: skip
    try:
        yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS)
    finally:
        engine.dispose()


def _sent_but_unrecorded(env: NotifyEnv, send_id: int) -> list[Ready]:
    """The slow worker's group: ``delivering``, its claim lapsed, the relay's row written
    (the relay took every message); what the worker holds in memory for ``record_outcome``."""
    attempted = utcnow() - timedelta(seconds=30)
    ready = []
    with env.session_factory() as s:
        for n in range(1, CUSTOMERS + 1):
            cid = env.customer(n).id
            rid = s.scalar(select(Recipient.id).where(Recipient.send_id == send_id,
                                                     Recipient.customer_id == cid))  # fmt: skip
            assert rid is not None
            s.execute(
                update(Recipient)
                .where(Recipient.id == rid)
                .values(
                    state="delivering",
                    attempt_at=attempted,
                    claimed_by=SLOW,
                    claim_until=utcnow() - timedelta(seconds=1),
                )
            )
            alias = f"a{n}@relay.example"
            s.add(
                RelayMessage(
                    token=secrets.token_hex(8), direction=DIRECTION_TO_CUSTOMER,
                    principal_id=env.service.id, customer_id=cid, alias=alias,
                    reason="notification", message_id=f"<m{n}@relay.example>", size=100,
                    sha256="0" * 64, status="delivered",
                    created_at=attempted + timedelta(seconds=1),
                    updated_at=attempted + timedelta(seconds=1),
                )
            )  # fmt: skip
            ready.append(Ready(rid, cid, alias, "s", "b", [], "https://u.example/x"))
        s.execute(update(Send).where(Send.id == send_id).values(status="running"))
        s.commit()
    return ready


def _send_entries(env: NotifyEnv, send_id: int) -> dict[str, int]:
    with env.session_factory() as s:
        rows = s.execute(
            select(LedgerEntry.subject, func.count())
            .where(LedgerEntry.kind == "send", LedgerEntry.ref == f"send:{send_id}")
            .group_by(LedgerEntry.subject)
        ).all()
    return {subject: n for subject, n in rows}


def test_a_lapsed_claim_recorded_twice_gets_one_send_entry(env: NotifyEnv) -> None:
    session = env.session()
    add_facts(session, gift_facts(list(range(1, CUSTOMERS + 1))))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=[Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)],
                       actor="apikey:test")  # fmt: skip
    session.commit()
    ready = _sent_but_unrecorded(env, send.id)
    runtime = env.runtime

    # The coordinator (its own session) finds the group's claim lapsed and settles it from
    # the relay's rows: delivered, one entry each.
    coordinator = env.session()
    c_send = coordinator.get(Send, send.id)
    c_template = coordinator.get(Template, template.id)
    assert c_send is not None and c_template is not None
    owner = coordinator.get(Principal, c_template.owner_id)
    assert owner is not None
    assert reconcile(runtime, coordinator, c_send, c_template, owner) is None
    want = {f"customer:{env.customer(n).id}": 1 for n in range(1, CUSTOMERS + 1)}
    assert _send_entries(env, send.id) == want

    # The slow worker (another session) now records the outcome it got from the relay.
    slow = env.session()
    w_send = slow.get(Send, send.id)
    w_template = slow.get(Template, template.id)
    assert w_send is not None and w_template is not None
    outcome = Outcome(delivered={r.recipient_id: None for r in ready})
    record_outcome(runtime, slow, w_send, w_template, owner, ready, outcome, {})

    assert _send_entries(env, send.id) == want
    with env.session_factory() as s:
        states = set(s.scalars(select(Recipient.state).where(Recipient.send_id == send.id)))
    assert states == {"delivered"}
    report = verify_ledger(runtime.engine, env.settings, runtime.ledger.signer.public_key)
    assert report.ok, report.problems
