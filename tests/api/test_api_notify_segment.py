"""A segment (fact-query) audience through the API, both backends: the preview and the send
say ``audience_source: segment``, and the send reads the segment a page at a time while it
stores the recipients, never the whole segment first."""

from __future__ import annotations

from typing import Any

import pytest
from api_testkit import Api
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from test_api_notify import template, world

from mailveil.config import Settings

SEGMENT = {"query": {"kind": "registry.gift_purchased"}}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Pages of one entry: the three gift facts are read in three pages (and an empty one)."""
    return settings.with_overrides(notify_batch_size=1)


def test_a_segment_is_previewed_as_one_and_streamed_into_the_send(
    admin: Api, backend: Api, session_factory: sessionmaker[Session]
) -> None:
    world(admin, backend)  # c1, c2 own their registries' gifts; c3's gift is for R1
    backend.ok("post", "/v1/templates", 201, json=template(expected_volume=10))
    body = {"template": "registry-gift", "audience": SEGMENT}
    seen = backend.ok("post", "/v1/sends?preview=true", 200, json=body)
    assert seen["audience_source"] == "segment" and seen["audience"] == 3
    assert seen["counts"]["eligible"] == 2 and seen["counts"]["ineligible"] == 1

    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))  # (conn, cursor, statement, params, context, many)

    engine = session_factory.kw["bind"].engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        made = backend.ok("post", "/v1/sends", 201, json=body)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert made["audience"] == 3 and made["eligible"] == 2 and made["status"] == "ready"
    assert made["recipients"] == {"pending": 2, "ineligible": 1}
    assert made["stage_label"] == f"1 of {len(made['stages'])}"
    pages = [i for i, s in enumerate(statements) if "ORDER BY notify_facts.id" in s]
    stored = [i for i, s in enumerate(statements) if s.startswith("INSERT INTO notify_recipients")]
    assert len(pages) == 4, statements  # one fact a page, then the empty page that ends it
    assert len(stored) == 3
    # Streamed: the first recipients are stored before the segment's second page is read
    # (loading the segment first would read every page before any insert).
    assert stored[0] < pages[1] and stored[-1] < pages[-1]
