"""The worker's pipeline (issue 17): while one group is on the wire to the relay, the worker
has already committed the next group ``delivering``; and still no byte of a recipient's mail
reaches anyone before that recipient was committed ``delivering``. Observed at the smarthost,
through the real relay, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import notify_kit as kit
import pytest
from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SmtpSession
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, address, gift_facts, register
from sqlalchemy import func, select

from mailveil.ledger.models import LedgerEntry
from mailveil.notify.audience import Entry
from mailveil.notify.models import Recipient
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import counts_of, create_send
from mailveil.notify.worker import GROUP

CUSTOMERS = 90


class WatchingSink(kit.Sink):
    """A smarthost that, as each message arrives, reads its recipient's state and how many
    of the send's recipients are in flight (``watch``: the session factory, the send, the
    customer id of each real address)."""

    watch: tuple[Any, int, dict[str, int]] | None = None
    seen: list[tuple[str, int]]

    async def handle_DATA(self, server: Any, session: SmtpSession, envelope: Envelope) -> str:
        await asyncio.sleep(0.01)  # a slow smarthost: the group is on the wire a while
        if self.watch is not None:
            factory, send_id, customer_of = self.watch
            with factory() as s:
                for rcpt in envelope.rcpt_tos:
                    state = s.scalar(
                        select(Recipient.state).where(
                            Recipient.send_id == send_id,
                            Recipient.customer_id == customer_of[rcpt.lower()],
                        )
                    )
                    flying = s.scalar(
                        select(func.count()).where(
                            Recipient.send_id == send_id, Recipient.state == "delivering"
                        )
                    )
                    self.seen.append((str(state), int(flying or 0)))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def env(
    settings: kit.Settings,
    notify_db: kit.sessionmaker[kit.Session],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[NotifyEnv]:
    monkeypatch.setattr(kit, "Sink", WatchingSink)
    tuned = kit.notify_settings(settings, notify_stages="1")  # one stage: one run of groups
    yield from kit.open_env(tuned, notify_db, CUSTOMERS)


def test_next_group_is_committed_while_one_is_on_the_wire(env: NotifyEnv) -> None:
    session = env.session()
    everyone = list(range(1, CUSTOMERS + 1))
    add_facts(session, gift_facts(everyone))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=[Entry(f"c{n}", None) for n in everyone],
                       actor="apikey:creator")  # fmt: skip
    session.commit()
    sink = env.sink
    assert isinstance(sink, WatchingSink)
    sink.seen = []
    customer_of = {address(n).lower(): env.customer(n).id for n in everyone}
    sink.watch = (env.session_factory, send.id, customer_of)

    run_to_end(env.runtime, send.id)
    env.flush()

    assert len(sink.seen) == CUSTOMERS
    states = {state for state, _ in sink.seen}
    assert states == {"delivering"}, "a message reached the smarthost before its recipient "
    "was committed delivering (or after it was recorded)"
    # One group on the wire (what is left of it) and the next one already committed.
    assert max(flying for _, flying in sink.seen) > GROUP, sink.seen

    delivered = env.delivered_numbers()
    assert delivered == everyone
    session.expire_all()
    assert counts_of(session, send.id) == {"delivered": CUSTOMERS}
    entries = session.scalar(
        select(func.count()).where(LedgerEntry.kind == "send", LedgerEntry.ref == f"send:{send.id}")
    )
    assert entries == CUSTOMERS
