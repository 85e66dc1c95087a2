"""A large preview's audience held in a temporary table and joined once (PostgreSQL).

Batch by batch, each batch's customers are found by one index probe per listed id (the
batch is a JSON parameter, ``eligibility._among``): on PostgreSQL that was 4-7 µs a
recipient, six times the bare join of the same tables. Here, once the first batch has given
the preview its ``ineligible`` samples, the rest of the audience is streamed into a
temporary table with COPY, a row a batch (its ids joined by line breaks, unnested in the
statement: no per-recipient formatting in Python, no per-row parsing and storing in the
server; a batch naming facts or languages, or with ids COPY must escape, goes a row an
entry). The caller's memory stays bounded by the batch. ``Screener.bulk_statement`` joins
it with the customers in one statement (a hash join) and hashes the rows by key: one count
per reason for the decided, a group of one for each of the others (customers holding a fact
of every required kind, and entries naming facts). The groups go into a second temporary
table, read back in key order (audience order for the groups of one) through a server-side
cursor, and the others are assessed in batches exactly as ``tally.tally_batch`` does. Counts
and samples are the same as batch by batch (the eligibility property test runs both).

SQLite keeps the batch path: it has no hash join, so the same statement is a nested loop of
the same index probes, plus the cost of filling the table.
"""

from __future__ import annotations

import gc
import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    MetaData,
    Table,
    Text,
    column,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnClause

from mailveil.config import Settings
from mailveil.notify.audience import Assessment, Entry, assess, batched
from mailveil.notify.eligibility import KEY_DELETED, KEY_UNKNOWN, Screener
from mailveil.notify.models import Template
from mailveil.notify.rules import Rule
from mailveil.notify.tally import Tally, tally_batch

Pairs = list[tuple[Entry, Assessment]]
# COPY's text format: a backslash, tab or line break in a value must be escaped.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NEWLINE = "\\n"  # a line break inside a COPY text field


def _field(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_ESCAPES)


def _lines(start: int, batch: list[Entry]) -> str:
    """COPY lines for a batch: the usual batch (ids only: nothing to escape, no facts, no
    language) as one row, its ids joined by line breaks (no per-recipient formatting here or
    per-row parsing in the server); any other batch one row per entry."""
    exts, facts, languages = zip(*batch, strict=True)
    blob = "".join(exts)
    plain = (
        facts.count(None) == len(batch)
        and languages.count(None) == len(batch)
        and "" not in exts
        and not any(c in blob for c in "\\\t\n\r")
    )
    if plain:
        return f"{start}\t{_NEWLINE.join(exts)}\t\\N\t\\N\tt\n"
    out = []
    for pos, e in enumerate(batch, start):
        named = None if e.fact_ids is None else json.dumps(list(e.fact_ids))
        out.append(f"{pos}\t{_field(e.external_id)}\t{_field(named)}\t{_field(e.language)}\tf\n")
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
    *,
    from_database: bool = False,
) -> Iterator[Pairs]:
    """Count the whole audience into ``tally`` (and ``tally.total``); yields, batch by
    batch, the eligible (entry, assessment) pairs in audience order.

    ``from_database``: the entries are read page by page on this session's connection (a
    segment). They stay on the batch path: psycopg holds the connection for the whole COPY,
    so reading the next page inside it would wait on itself for good."""
    size = settings.notify_batch_size
    batches = batched(entries, size)
    bulk = session.get_bind().dialect.name == "postgresql" and not from_database
    for batch in batches:
        tally.total += len(batch)
        with _no_cycle_gc():
            pairs = tally_batch(session, settings, template, rule, batch, now, screener, tally)
        yield pairs
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
    # A row: a plain batch (``many``: its ids joined by line breaks, from ``pos`` on) or one
    # entry (``_lines``); ``audience`` unnests it into one row per entry.
    table = Table(
        name, MetaData(),
        Column("pos", BigInteger), Column("ext", Text), Column("facts", Text),
        Column("language", Text), Column("many", Boolean),
        prefixes=["TEMPORARY"],
    )  # fmt: skip
    # (``name`` is ours: a random hex suffix.)
    unnested = f"""SELECT a.pos + u.i - 1 AS pos, u.ext, a.facts, a.language FROM "{name}" a,
        unnest(CASE WHEN a.many THEN string_to_array(a.ext, E'\\n') ELSE ARRAY[a.ext] END)
          WITH ORDINALITY AS u(ext, i)"""  # noqa: S608
    typed: list[ColumnClause[Any]] = [
        column("pos", BigInteger), column("ext", Text), column("facts", Text),
        column("language", Text),
    ]  # fmt: skip
    audience = text(unnested).columns(*typed).subquery("audience")
    conn = session.connection()
    made = [table]
    table.create(conn)
    try:
        raw = conn.connection.driver_connection
        assert raw is not None
        pos = 0
        columns = "pos, ext, facts, language, many"
        with raw.cursor().copy(f'COPY "{name}" ({columns}) FROM STDIN') as cp, _no_cycle_gc():
            batch: list[Entry] | None = first
            while batch is not None:
                cp.write(_lines(pos, batch))
                pos += len(batch)
                batch = next(batches, None)
        tally.total += pos
        # Without statistics the planner takes the table for a few rows and probes.
        conn.execute(text(f'ANALYZE "{name}"'))
        # One pass over the audience: hashed into groups (a sort would order every entry
        # only to count most of them), kept server-side; then the groups, by key.
        groups = Table(
            f"{name}_k", MetaData(),
            Column("key", BigInteger), Column("n", BigInteger), Column("ext", Text),
            Column("cid", BigInteger), Column("facts", Text), Column("language", Text),
            prefixes=["TEMPORARY"],
        )  # fmt: skip
        made.append(groups)
        groups.create(conn)
        fill = insert(groups).from_select(list(groups.c.keys()),
                                          screener.bulk_statement(audience))  # fmt: skip
        with _planned_as_hash_join(conn):
            conn.execute(fill)
        # Streamed (a server-side cursor), this statement only: ``Connection.execution_options``
        # would stream every later statement of the session too.
        streamed = (
            select(*groups.c).order_by(groups.c.key)
            .execution_options(stream_results=True, yield_per=settings.notify_batch_size)
        )  # fmt: skip
        result = conn.execute(streamed)
        try:
            for part in result.partitions(settings.notify_batch_size):
                with _no_cycle_gc():
                    pairs = _assess_rows(session, settings, template, rule, part, now,
                                         screener, tally)  # fmt: skip
                yield pairs
        finally:  # also when the caller stops early: the tables cannot drop under a cursor
            result.close()
    finally:
        # (A statement that failed aborted the transaction: its rollback drops the table.)
        for made_table in made:
            with suppress(SQLAlchemyError):
                made_table.drop(conn)


@contextmanager
def _no_cycle_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: making and dropping millions of entries (tuples
    and strings, no cycles; freed by reference counting) set it off over and over, each time
    walking every object of the process (2,000,000 entries made and COPY lines written:
    2.7 s with it, 0.8 s without). Process-wide while it lasts: a batch's worth of work (or
    the COPY), never across a yield."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# The planner cannot know how many ids a row unnests into (it guesses ten): it would probe
# the customers' index once per id (a nested loop, 4-7 µs a recipient) where one hash join
# of the two tables is what a whole audience needs; and a sort would order every entry only
# to count most of them, where hashing the few keys does. (The plans thus ruled out carry a
# cost so huge that JIT compilation would be on for any audience: half a second each time.)
# Set for this one statement, then restored.
_HASH_PLAN = {"enable_nestloop": "off", "enable_mergejoin": "off", "enable_sort": "off",
              "jit": "off"}  # fmt: skip


@contextmanager
def _planned_as_hash_join(conn: Connection) -> Iterator[None]:
    names = list(_HASH_PLAN)
    reads = ", ".join(f"current_setting(:n{i})" for i in range(len(names)))
    sets = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(names)))
    named = {f"n{i}": n for i, n in enumerate(names)}
    before = conn.execute(text(f"SELECT {reads}"), named).one()
    conn.execute(text(f"SELECT {sets}"),
                 named | {f"v{i}": _HASH_PLAN[n] for i, n in enumerate(names)})  # fmt: skip
    restore = named | {f"v{i}": v for i, v in enumerate(before)}
    try:
        yield
    except BaseException:
        # (A failed statement aborted the transaction: its rollback restores them.)
        with suppress(SQLAlchemyError):
            conn.execute(text(f"SELECT {sets}"), restore)
        raise
    conn.execute(text(f"SELECT {sets}"), restore)


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
