"""After a crash, every relay state a recipient left in flight can have, with exact counts.

A worker that died mid-group leaves its recipients ``delivering``; the relay's row for each
one says how far the message got. The test writes that state as a dead worker and relay
leave it (recipients ``delivering`` with an old attempt time, relay rows in each status,
the send running under a lapsed lease), then a fresh worker process resumes the send
through the real relay into the sink:

- relay ``delivered`` or ``bounced``: delivered, never resent;
- ``rejected``: failed;
- ``deferred`` or no row at all: the smarthost never took it, sent again;
- ``sending`` (the relay died before it recorded the smarthost's answer), or ``unknown``
  (what the relay's reconcile makes of such a row): unconfirmed --
  never resent, no ``send`` ledger entry, out of corrections unless an admin includes them,
  settled by the worker's job once the relay's row changes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import notify_kit as kit
import pytest
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import select, update
from worker_kit import run_send_in_process

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.verify import verify_ledger
from mailveil.notify.audience import Entry
from mailveil.notify.models import Recipient, Send
from mailveil.notify.sends import correction, counts_of, create_send
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER
from mailveil.relay.models import RelayMessage
from mailveil.worker.jobs import unconfirmed

CUSTOMERS = 60
# customer numbers -> the relay's status for their in-flight message (None: no row)
LEFT = {
    **{n: "delivered" for n in range(1, 11)},
    **{n: "bounced" for n in range(11, 19)},
    **{n: "rejected" for n in range(19, 27)},
    **{n: "deferred" for n in range(27, 35)},
    **{n: None for n in range(35, 43)},
    **{n: "sending" for n in range(43, 47)},
    # what the relay's reconcile makes of a row left sending (relay.reconcile)
    **{n: "unknown" for n in range(47, 51)},
}
NEVER_TRIED = list(range(51, CUSTOMERS + 1))
RESENT = [n for n, st in LEFT.items() if st in (None, "deferred")]
TAKEN = [n for n, st in LEFT.items() if st in ("delivered", "bounced")]
UNCONFIRMED = [n for n, st in LEFT.items() if st in ("sending", "unknown")]
FAILED = [n for n, st in LEFT.items() if st == "rejected"]


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> Iterator[NotifyEnv]:
    """A file SQLite database the test, its relay and the worker process share."""
    engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
    upgrade(engine)
    tuned = kit.notify_settings(
        settings.with_overrides(database_url=str(engine.url)),
        notify_stages="1",
        notify_min_stage_size=1,
        notify_reconcile_after_seconds=2.0,
        notify_max_bounce_rate=1.0,  # the rejected and bounced are the point here, not a gate
    )
    try:
        yield from kit.open_env(tuned, make_session_factory(engine), CUSTOMERS)
    finally:
        engine.dispose()


def _leave_in_flight(env: NotifyEnv, send_id: int) -> None:
    """What a worker SIGKILLed mid-group and a relay that died mid-handoff leave."""
    attempted = utcnow() - timedelta(seconds=30)
    with env.session_factory() as s:
        for n, status in LEFT.items():
            cid = env.customer(n).id
            s.execute(
                update(Recipient)
                .where(Recipient.send_id == send_id, Recipient.customer_id == cid)
                .values(state="delivering", attempt_at=attempted)
            )
            if status is None:
                continue  # the relay never accepted it: no row
            s.add(
                RelayMessage(
                    token=secrets.token_hex(8),
                    direction=DIRECTION_TO_CUSTOMER,
                    principal_id=env.service.id,
                    customer_id=cid,
                    alias=f"a{n}@relay.example",
                    reason="notification",
                    message_id=f"<m{n}@relay.example>",
                    size=100,
                    sha256="0" * 64,
                    status=status,
                    created_at=attempted + timedelta(seconds=1),
                    updated_at=attempted + timedelta(seconds=1),
                )
            )
        s.execute(
            update(Send)
            .where(Send.id == send_id)
            .values(
                status="running",
                lease_owner="dead-worker",
                lease_until=utcnow() - timedelta(seconds=1),
            )
        )
        s.commit()


def _ledgered(env: NotifyEnv, send_id: int) -> list[str]:
    with env.session_factory() as s:
        return sorted(
            s.scalars(
                select(LedgerEntry.subject).where(
                    LedgerEntry.kind == "send", LedgerEntry.ref == f"send:{send_id}"
                )
            )
        )


def _customers(env: NotifyEnv, numbers: list[int]) -> list[str]:
    return sorted(f"customer:{env.customer(n).id}" for n in numbers)


def test_every_relay_state_left_in_flight_settles_with_exact_counts(env: NotifyEnv) -> None:
    session = env.session()
    add_facts(session, gift_facts(list(range(1, CUSTOMERS + 1))))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    send = create_send(
        session,
        env.settings,
        env.runtime.ledger,
        template=template,
        entries=[Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)],
        actor="apikey:test",
    )
    session.commit()
    assert send.status == "ready", send.approval_reason
    _leave_in_flight(env, send.id)

    run_send_in_process(env.settings, send.id)
    env.flush()

    with env.session_factory() as s:
        assert s.get(Send, send.id).status == "completed"  # type: ignore[union-attr]
        assert counts_of(s, send.id) == {
            "delivered": len(TAKEN) + len(RESENT) + len(NEVER_TRIED),  # 18 + 16 + 10
            "failed": len(FAILED),  # 8
            "unconfirmed": len(UNCONFIRMED),  # 8
        }
        states = dict(
            s.execute(
                select(Recipient.customer_id, Recipient.state).where(Recipient.send_id == send.id)
            ).all()
        )
    for n, status in LEFT.items():
        want = {
            "delivered": "delivered",
            "bounced": "delivered",
            "rejected": "failed",
            "deferred": "delivered",
            None: "delivered",
            "sending": "unconfirmed",
            "unknown": "unconfirmed",
        }[status]
        assert states[env.customer(n).id] == want, (n, status)
    # Only the messages the smarthost never took went out again, each once.
    assert env.delivered_numbers() == sorted(RESENT + NEVER_TRIED)
    # Unconfirmed recipients have no send entry: the ledger counts only confirmed mail.
    assert _ledgered(env, send.id) == _customers(env, TAKEN + RESENT + NEVER_TRIED)
    with env.session_factory() as s:
        noted = s.scalars(
            select(LedgerEntry.detail).where(
                LedgerEntry.kind == "send_unconfirmed", LedgerEntry.ref == f"send:{send.id}"
            )
        ).all()
    assert len(noted) == 1 and '"unconfirmed":8' in noted[0].replace(" ", "")
    report = verify_ledger(env.runtime.engine, env.settings, env.runtime.ledger.signer.public_key)
    assert report.ok, report.problems

    # A correction reaches the confirmed recipients; the unconfirmed only on an operator's word.
    fix_template = {
        **GIFT_TEMPLATE,
        "name": "registry-sorry",
        "rule": None,
        "subject": "About our earlier message",
        "sensitivity": [],
        "body": "Hello,\n\nplease disregard our earlier message.\n",
    }
    with env.session_factory() as s:
        register(s, env, fix_template)
        plain = correction(
            s,
            env.settings,
            env.runtime.ledger,
            original_id=send.id,
            template_name="registry-sorry",
            version=None,
            actor="apikey:op",
        )
        wide = correction(
            s,
            env.settings,
            env.runtime.ledger,
            original_id=send.id,
            template_name="registry-sorry",
            version=None,
            actor="apikey:op",
            include_unconfirmed=True,
        )
        s.commit()
        assert counts_of(s, plain.id) == {"pending": 34 + 10}
        assert counts_of(s, wide.id) == {"pending": 34 + 10 + 8}

    # Later the relay's record of one unconfirmed message settles: the worker's job follows.
    first = env.customer(UNCONFIRMED[0]).id
    with env.session_factory() as s:
        s.execute(
            update(RelayMessage).where(RelayMessage.customer_id == first).values(status="delivered")
        )
        s.commit()
    assert unconfirmed(env.runtime) == {"sends": 1, "settled": 1}
    with env.session_factory() as s:
        assert counts_of(s, send.id)["unconfirmed"] == len(UNCONFIRMED) - 1
    assert _ledgered(env, send.id) == _customers(
        env, TAKEN + RESENT + NEVER_TRIED + UNCONFIRMED[:1]
    )
