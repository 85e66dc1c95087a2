"""A large preview's audience held in a temporary table and joined once (PostgreSQL).

Batch by batch, each batch's customers are found by one index probe per listed id (the
batch is a JSON parameter, ``eligibility._among``): on PostgreSQL that was 4-7 µs a
recipient, six times the bare join of the same tables. Here, once the first batch has given
the preview its ``ineligible`` samples, the rest of the audience is streamed into a
temporary table with COPY (a batch at a time: the caller's memory stays bounded by the
batch), and ``Screener.bulk_statement`` joins it with the customers in one statement (a hash
join) that counts the decided entries by reason and returns the others (customers holding a
fact of every required kind, and entries naming facts) one row each, in audience order,
through a server-side cursor, to be assessed in batches exactly as ``tally.tally_batch``
does. Counts and samples are the same as batch by batch (the eligibility property test
runs both).

SQLite keeps the batch path: it has no hash join, so the same statement is a nested loop of
the same index probes, plus the cost of filling the table.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import suppress
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, Table, Text, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.notify.audience import Assessment, Entry, assess, batched
from mailveil.notify.eligibility import KEY_DELETED, KEY_UNKNOWN, Screener
from mailveil.notify.models import Template
from mailveil.notify.rules import Rule
from mailveil.notify.tally import Tally, tally_batch

Pairs = list[tuple[Entry, Assessment]]
# COPY's text format: a backslash, tab or line break in a value must be escaped.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _field(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_ESCAPES)


def _lines(start: int, batch: list[Entry]) -> str:
    exts = [e.external_id for e in batch]
    blob = "".join(exts)
    plain = not any(c in blob for c in "\\\t\n\r") and all(
        e.fact_ids is None and e.language is None for e in batch
    )
    if plain:  # the usual audience, a list of ids: nothing to escape, no facts, no language
        return "".join([f"{pos}\t{ext}\t\\N\t\\N\n" for pos, ext in enumerate(exts, start)])
    out = []
    for pos, e in enumerate(batch, start):
        facts = None if e.fact_ids is None else json.dumps(list(e.fact_ids))
        out.append(f"{pos}\t{_field(e.external_id)}\t{_field(facts)}\t{_field(e.language)}\n")
    return "".join(out)


def tally_all(
    session: Session,
    settings: Settings,
    template: Template,
    rule: Rule,
    entries: Iterable[Entry],
    now: datetime,
    screener: Screener,
    tally: Tally,
) -> Iterator[Pairs]:
    """Count the whole audience into ``tally`` (and ``tally.total``); yields, batch by
    batch, the eligible (entry, assessment) pairs in audience order."""
    size = settings.notify_batch_size
    batches = batched(entries, size)
    bulk = session.get_bind().dialect.name == "postgresql"
    for batch in batches:
        tally.total += len(batch)
        yield tally_batch(session, settings, template, rule, batch, now, screener, tally)
        if bulk and "ineligible" in tally.full:
            yield from _tally_rest(session, settings, template, rule, batches, now, screener,
                                   tally)  # fmt: skip
            return


def _tally_rest(
    session: Session,
    settings: Settings,
    template: Template,
    rule: Rule,
    batches: Iterator[list[Entry]],
    now: datetime,
    screener: Screener,
    tally: Tally,
) -> Iterator[Pairs]:
    first = next(batches, None)
    if first is None:
        return
    name = f"mv_preview_{uuid.uuid4().hex[:12]}"
    audience = Table(
        name, MetaData(),
        Column("pos", BigInteger), Column("ext", Text), Column("facts", Text),
        Column("language", Text),
        prefixes=["TEMPORARY"],
    )  # fmt: skip
    conn = session.connection()
    audience.create(conn)
    try:
        raw = conn.connection.driver_connection
        assert raw is not None
        pos = 0
        with raw.cursor().copy(f'COPY "{name}" (pos, ext, facts, language) FROM STDIN') as cp:
            batch: list[Entry] | None = first
            while batch is not None:
                cp.write(_lines(pos, batch))
                pos += len(batch)
                batch = next(batches, None)
        tally.total += pos
        # Without statistics the planner takes the table for a few rows and probes.
        conn.execute(text(f'ANALYZE "{name}"'))
        # Streamed (a server-side cursor), this statement only: ``Connection.execution_options``
        # would stream every later statement of the session too.
        streamed = screener.bulk_statement(audience).execution_options(
            stream_results=True, yield_per=settings.notify_batch_size
        )
        result = conn.execute(streamed)
        for part in result.partitions(settings.notify_batch_size):
            yield _assess_rows(session, settings, template, rule, part, now, screener, tally)
        result.close()
    finally:
        # (A statement that failed aborted the transaction: its rollback drops the table.)
        with suppress(SQLAlchemyError):
            audience.drop(conn)


def _assess_rows(
    session: Session,
    settings: Settings,
    template: Template,
    rule: Rule,
    rows: Any,
    now: datetime,
    screener: Screener,
    tally: Tally,
) -> Pairs:
    batch: list[Entry] = []
    screened: dict[str, tuple[int, str, bool, int]] = {}
    for key, n, ext, cid, facts, language in rows:
        if key == KEY_UNKNOWN:
            tally.counts["ineligible", "unknown customer"] += n
        elif key == KEY_DELETED:
            tally.counts["ineligible", "customer deleted"] += n
        elif key < 0:
            tally.counts["ineligible", str(screener.reasons[-2 - key])] += n
        else:
            named = None if facts is None else tuple(json.loads(facts))
            batch.append(Entry(ext, named, language))
            screened[ext] = (cid, ext, False, -1)
    verdicts = assess(session, settings, template, rule, batch, now, screener=screener,
                      screened=screened)  # fmt: skip
    tally.take(verdicts)
    return [(e, a) for e, a in zip(batch, verdicts, strict=True) if a.state == "eligible"]


__all__ = ["tally_all"]
