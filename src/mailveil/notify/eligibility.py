"""Set-based eligibility: the database decides most of a batch in one statement.

The batch's external ids go to the database as one bound parameter, a JSON array (read by
``json_each`` on SQLite, by ``jsonb_array_elements_text`` and a LATERAL index probe on
PostgreSQL); for each required fact, a correlated EXISTS says whether the customer holds
one of its kind inside its window (and not from the future). That alone decides unknown,
deleted, and lacking a required fact (the reason names the first one missing, exactly as
``rules.evaluate`` would). Only customers who hold a fact of every required kind (a superset
of the eligible: attribute conditions and ``owns`` are not SQL) have their facts read and
the rule evaluated in Python; their suppression, frequency cap, opt-outs and sensitive
topics come from a second statement over just those customers (``Screener.details``).

``Screener.grouped`` is the preview's form of the first statement: the decided customers
come back as one count per reason, the rest one row each, so a mostly ineligible audience
costs one indexed join per batch and nothing per recipient in Python.

Plain SQLAlchemy Core; the only dialect difference is how the list parameter is read
(``_among``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    Text,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from mailveil.contacts.models import Customer
from mailveil.notify.models import Fact, Recipient, Suppression
from mailveil.notify.rules import Rule

# A fact from the future is not evidence (rules.Requirement.matches).
FUTURE_SLACK = timedelta(minutes=5)
# Row of ``Screener.run``: (customer id, external id, deleted, first missing requirement or
# -1 when they hold a fact of every required kind).
ID, EXT, DELETED, MISSING = range(4)
# Keys of ``Screener.grouped`` rows below zero: collapsed counts.
KEY_DELETED = -1
KEY_UNKNOWN = -100  # (bulk_statement) no such customer; below every missing_key


def missing_key(i: int) -> int:
    """The grouped key of the customers whose first missing requirement is ``i``."""
    return -2 - i


def decided_reasons(rule: Rule | None) -> list[str | None]:
    """By first missing requirement: the reason ``rules.evaluate`` gives, when the SQL flag
    alone decides it (no earlier requirement has attribute conditions, which only Python
    checks), else None (evaluate the rule)."""
    out: list[str | None] = []
    blocked = False
    for req in rule.require if rule is not None else ():
        out.append(None if blocked else f"no {req.kind} fact meets the rule")
        blocked = blocked or bool(req.where)
    return out


def _among(dialect: str, columns: Sequence[Any], column: Any, name: str, of: Any) -> Any:
    """``columns`` of the customers whose ``column`` is in a list given as one bound
    parameter (a JSON array), one index probe per listed value: a join with ``json_each`` on
    SQLite; on PostgreSQL a LATERAL subquery (LIMIT 1: it stays a probe) per
    ``jsonb_array_elements_text`` value (a plain join, or ``= ANY``, was planned as a scan
    of the whole table once the list held thousands of values)."""
    if dialect == "postgresql":
        # A JSON array too: adapting a Python list to a text[] was a fifth of a preview.
        values = cast(bindparam(name, type_=Text()), JSONB)
        listed = func.jsonb_array_elements_text(values).table_valued("value")
        listed = listed.render_derived(name="listed")
        probe = (
            select(*(c.label(f"c{i}") for i, c in enumerate(columns)))
            .where(column == cast(listed.c.value, of))
            .limit(1)
            .lateral("probe")
        )
        return select(*probe.c).select_from(listed).join(probe, true())
    listed = func.json_each(bindparam(name, type_=Text())).table_valued("value").alias("listed")
    return select(*columns).select_from(listed).join(Customer, column == listed.c.value)


class Screener:
    """The batch statements for one template, rule and moment: built once, run per batch."""

    def __init__(
        self,
        dialect: str,
        rule: Rule | None,
        scopes: Sequence[str],
        cap: tuple[datetime, int] | None,
        now: datetime,
    ) -> None:
        self.dialect = dialect
        self.reasons = decided_reasons(rule)
        flags = []
        for req in rule.require if rule is not None else ():
            cond = [
                Fact.customer_id == Customer.id,
                Fact.kind == req.kind,
                Fact.occurred_at <= now + FUTURE_SLACK,
            ]
            if req.within_days is not None:
                cond.append(Fact.occurred_at >= now - timedelta(days=req.within_days))
            flags.append(exists().where(*cond))
        self.flags = flags
        missing: ColumnElement[int] = literal(-1)
        if flags:
            missing = case(*((~flag, i) for i, flag in enumerate(flags)), else_=-1)
        self.statement = _among(
            dialect,
            [Customer.id, Customer.external_id, Customer.deleted_at.is_not(None), missing],
            Customer.external_id, "exts", String(),
        )  # fmt: skip
        # One CASE, each EXISTS evaluated at most once a row: decided customers collapse
        # into a negative key, the others keep their id (a group of one).
        whens: list[tuple[Any, Any]] = [(Customer.deleted_at.is_not(None), KEY_DELETED)]
        for i, flag in enumerate(flags):
            whens.append((~flag, missing_key(i) if self.reasons[i] is not None else Customer.id))
        key = case(*whens, else_=Customer.id) if rule is not None else Customer.id
        keyed = _among(dialect, [key, Customer.external_id], Customer.external_id, "exts",
                       String()).subquery("keyed")  # fmt: skip
        k, ext = keyed.c
        self.grouped_statement = select(k, func.count(), func.min(ext)).group_by(k)
        suppression = (
            select(Suppression.scope)
            .where(
                Suppression.customer_id == Customer.id,
                Suppression.scope.in_(bindparam("scopes", list(scopes), literal_execute=True)),
            )
            .order_by(Suppression.id)
            .limit(1)
            .scalar_subquery()
        )
        capped: ColumnElement[Any] = literal(False)
        if cap is not None:
            since, most = cap
            delivered = (
                select(func.count())
                .where(
                    Recipient.customer_id == Customer.id,
                    Recipient.state == "delivered",
                    Recipient.delivered_at >= since,
                )
                .scalar_subquery()
            )
            capped = delivered >= most
        self.details_statement = _among(
            dialect,
            [Customer.id, suppression, capped, cast(Customer.opt_outs, Text),
             cast(Customer.sensitive_topics, Text)],
            Customer.id, "ids", BigInteger(),
        )  # fmt: skip

    def bulk_statement(self, audience: Any) -> Any:
        """``grouped_statement`` over a whole audience held in a table (``notify.bulk``:
        columns pos, ext, facts, language) instead of one batch: one join, grouped by key
        (columns key, n, ext, cid, facts, language; unordered).
        Decided entries collapse into a negative key (KEY_UNKNOWN too: every entry counts,
        repeats included); the rest, and every entry that names facts, keep their position
        (a group of one), so they come last, in audience order."""
        pos = audience.c.pos
        whens: list[tuple[Any, Any]] = [
            (Customer.id.is_(None), KEY_UNKNOWN),
            (Customer.deleted_at.is_not(None), KEY_DELETED),
            (audience.c.facts.is_not(None), pos),
        ]
        for i, flag in enumerate(self.flags):
            whens.append((~flag, missing_key(i) if self.reasons[i] is not None else pos))
        keyed = (
            select(case(*whens, else_=pos).label("key"), audience.c.ext, Customer.id,
                   audience.c.facts, audience.c.language)
            .select_from(audience.outerjoin(Customer, Customer.external_id == audience.c.ext))
            .subquery("keyed")
        )  # fmt: skip
        k, ext, cid, facts, language = keyed.c
        # Bytewise ("C"): the large groups' min() compares every row's id, in the collation
        # of the database that would be a locale comparison each.
        return select(k.label("key"), func.count().label("n"),
                      func.min(ext.collate("C")).label("ext"), func.min(cid).label("cid"),
                      func.min(facts).label("facts"),
                      func.min(language).label("language")).group_by(k)  # fmt: skip

    def _param(self, values: Sequence[Any]) -> str:
        return json.dumps(list(values))

    def run(self, session: Session, external_ids: Sequence[str]) -> dict[str, Any]:
        """Rows (ID, EXT, DELETED, MISSING) by external id; absent: no such customer."""
        if not external_ids:
            return {}
        params = {"exts": self._param(external_ids)}
        rows = session.connection().execute(self.statement, params).all()
        return {r[EXT]: r for r in rows}

    def grouped(self, session: Session, external_ids: Sequence[str]) -> list[Any]:
        """(key, customers, an external id) rows: key KEY_DELETED or ``missing_key(i)``
        counts the decided; any other key is one customer (their id) to evaluate."""
        if not external_ids:
            return []
        params = {"exts": self._param(external_ids)}
        return list(session.connection().execute(self.grouped_statement, params))

    def details(self, session: Session, ids: Sequence[int]) -> dict[int, Any]:
        """By customer id: (id, first matching suppression scope, capped, opt_outs text,
        sensitive_topics text)."""
        if not ids:
            return {}
        params = {"ids": self._param(ids)}
        rows = session.connection().execute(self.details_statement, params).all()
        return {r[0]: r for r in rows}


__all__ = [
    "DELETED",
    "EXT",
    "FUTURE_SLACK",
    "ID",
    "KEY_DELETED",
    "KEY_UNKNOWN",
    "MISSING",
    "Screener",
    "decided_reasons",
    "missing_key",
]
