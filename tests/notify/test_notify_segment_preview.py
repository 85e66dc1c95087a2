"""A segment's preview on PostgreSQL whose first batch fills the ineligible samples: the
segment is read page by page on the preview's own connection, so it must not take the bulk
path (a COPY holds that connection; reading the next page inside it waited on itself for
good). Counts come out exact on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import notify_kit as kit
import pytest
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.notify.audience import parse_audience, query_entries
from mailveil.notify.sends import preview
from mailveil.notify.tally import SAMPLES

CUSTOMERS = 12
BATCH = SAMPLES  # the first batch alone fills the ineligible samples


@pytest.fixture
def paged_env(settings: Settings, notify_db: sessionmaker[Session]) -> Iterator[NotifyEnv]:
    paged = kit.notify_settings(settings, notify_batch_size=BATCH)
    yield from kit.open_env(paged, notify_db, CUSTOMERS, relay=False)


@pytest.mark.timeout(60)  # the bug was a hang
def test_a_segment_preview_past_the_first_batch_counts_every_customer(
    paged_env: NotifyEnv,
) -> None:
    env = paged_env
    session = env.session()
    # Every customer bought from a registry, all but the last two too long ago for the rule:
    # the first batches are all ineligible.
    add_facts(
        session, gift_facts(list(range(1, CUSTOMERS - 1)), days_ago=60) + gift_facts([11, 12])
    )
    template = register(session, env, GIFT_TEMPLATE)
    segment = parse_audience({"query": {"kind": "registry.gift_purchased"}})
    assert not isinstance(segment, list)
    entries = query_entries(session, segment, BATCH)
    shown = preview(session, env.settings, template, entries, source="segment")
    assert shown["audience_source"] == "segment"
    assert shown["audience"] == CUSTOMERS
    assert shown["counts"]["eligible"] == 2, shown["counts"]
    assert shown["counts"]["ineligible"] == CUSTOMERS - 2, shown["counts"]
