"""A segment send run by the worker through mailveil's relay, stage by stage, on SQLite and
PostgreSQL: the send's stage label (the view the API, console and `sends status|start`
show) counts "k of N" while a stage is open and reads "all N done" once the last one is
over, never "N+1 of N"."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import notify_kit as kit
import pytest
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.notify.assist import assist
from mailveil.notify.audience import Entry, parse_audience, query_entries
from mailveil.notify.models import Send
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import create_send, get_send, send_view
from mailveil.notify.worker import cutoff_of

CUSTOMERS = 10


@pytest.fixture
def staged_env(settings: Settings, notify_db: sessionmaker[Session]) -> Iterator[NotifyEnv]:
    """Three real stages over ten customers (2, 5, then all 10), each soaking a moment (the
    worker pauses between them: the test looks then); segment pages of three."""
    staged = kit.notify_settings(
        settings, notify_stages="0.2,0.5,1", notify_min_stage_size=1, notify_batch_size=3,
        notify_soak_seconds=0.2,
    )  # fmt: skip
    yield from kit.open_env(staged, notify_db, CUSTOMERS)


def test_a_segment_send_counts_its_stages_and_then_reads_all_done(staged_env: NotifyEnv) -> None:
    env = staged_env
    session = env.session()
    add_facts(session, gift_facts(list(range(1, CUSTOMERS + 1))))
    template = register(session, env, GIFT_TEMPLATE)
    segment = parse_audience({"query": {"kind": "registry.gift_purchased"}})
    assert not isinstance(segment, list)
    entries = query_entries(session, segment, env.settings.notify_batch_size)
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=entries, actor="apikey:stages")  # fmt: skip
    session.commit()
    assert (send.audience, send.eligible, send.status) == (CUSTOMERS, CUSTOMERS, "ready")
    stages = len(send.stages)
    assert stages == 3

    def label() -> str:
        with env.session_factory() as s:
            view: dict[str, Any] = send_view(s, get_send(s, send.id))
            return f"{view['status']}: {view['stage_label']}"

    seen = [label()]

    def watch(seconds: float) -> None:  # the worker's pause between steps
        if seen[-1] != (now := label()):
            seen.append(now)
        time.sleep(seconds)

    run_to_end(env.runtime, send.id, sleep=watch)
    seen.append(label())
    assert seen[0] == "ready: 1 of 3" and seen[-1] == "completed: all 3 done", seen
    assert "running: 3 of 3" in seen, seen  # the last stage is shown as such while it runs
    numbers = [tuple(map(int, m.groups())) for s in seen if (m := re.search(r"(\d+) of (\d+)", s))]
    assert all(1 <= k <= n == stages for k, n in numbers), seen  # never "4 of 3"
    assert [k for k, _n in numbers] == sorted(k for k, _n in numbers), seen
    env.flush()
    assert env.delivered_numbers() == list(range(1, CUSTOMERS + 1))


def test_a_helper_that_looks_between_the_last_stage_and_completion_finds_no_work(
    staged_env: NotifyEnv,
) -> None:
    """The coordinator commits "past the last stage" before it commits "completed"; a helper
    looking in between found an index past the stage plan (IndexError, logged as a failed
    helper in a two-worker run). It now finds no stage under way."""
    env = staged_env
    session = env.session()
    add_facts(session, gift_facts(list(range(1, CUSTOMERS + 1))))
    template = register(session, env, GIFT_TEMPLATE)
    entries = [Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)]
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=entries, actor="apikey:stages")  # fmt: skip
    session.commit()
    session.execute(
        update(Send)
        .where(Send.id == send.id)
        .values(status="running", stage=len(send.stages), stage_done_at=None)
    )
    session.commit()
    assert assist(env.runtime, send.id, "helper-between") is False
    assert cutoff_of(session, get_send(session, send.id)) is None
    env.flush()
    assert env.delivered_numbers() == []
