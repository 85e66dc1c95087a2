"""A large NDJSON facts import ends with ANALYZE on PostgreSQL (``notify.facts.ingest_lines``):
without statistics on a table just filled, the planner probed the eligibility EXISTS through
(kind, occurred_at) and filtered every fact of the kind per customer."""

from __future__ import annotations

import json

import notify_kit as kit
import pytest
from notify_kit import NotifyEnv
from sqlalchemy import text
from sqlalchemy.orm import Session

from mailveil.notify.facts import ingest_lines


def _lines(numbers: list[int], days_ago: float) -> list[bytes]:
    return [json.dumps(f).encode() for f in kit.gift_facts(numbers, days_ago=days_ago)]


def _analyzed(session: Session) -> bool:
    session.commit()
    session.execute(text("SELECT pg_stat_clear_snapshot()"))
    return bool(
        session.scalar(
            text(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                "WHERE relname = 'notify_facts' AND schemaname = current_schema()"
            )
        )
    )


def test_a_large_import_gathers_statistics_a_small_one_does_not(notify_env: NotifyEnv) -> None:
    s = notify_env.session()
    if s.get_bind().dialect.name != "postgresql":
        pytest.skip("ANALYZE after an import is PostgreSQL's (SQLite plans without it)")
    small = _lines([1, 2, 3], days_ago=1)
    results = list(ingest_lines(s, small, batch_size=2, analyze_after=len(small) + 1))
    assert [r.status for r in results] == ["created"] * len(small)
    assert not _analyzed(s), "an import below the threshold was analysed"
    large = _lines([4, 5, 6, 7, 8], days_ago=2)
    results = list(ingest_lines(s, large, batch_size=3, analyze_after=len(large)))
    assert [r.status for r in results] == ["created"] * len(large)
    assert _analyzed(s), "an import at the threshold left notify_facts without statistics"
