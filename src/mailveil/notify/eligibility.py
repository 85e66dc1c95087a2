"""Set-based eligibility: the database decides most of a batch in one statement.

The batch's external ids go to the database as one bound parameter (a JSON array read by
``json_each`` on SQLite, an array read by ``unnest`` on PostgreSQL) joined with customers;
for each required fact, a correlated EXISTS says whether the customer holds one of its kind
inside its window (and not from the future). That alone decides unknown, deleted, and
lacking a required fact (the reason names the first one missing, exactly as
``rules.evaluate`` would). Only customers who hold a fact of every required kind (a superset
of the eligible: attribute conditions and ``owns`` are not SQL) have their facts read and
the rule evaluated in Python; their suppression, frequency cap, opt-outs and sensitive
topics come from a second statement over just those customers (``Screener.details``).

``Screener.grouped`` is the preview's form of the first statement: the decided customers
come back as one count per reason, the rest one row each, so a mostly ineligible audience
costs one indexed join per batch and nothing per recipient in Python.

Plain SQLAlchemy Core; the only dialect difference is how the list parameter is read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
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
)
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


def _listed(dialect: str, name: str, of: Any) -> Any:
    """A list given as one bound parameter, as a one-column table ``value``."""
    if dialect == "postgresql":
        param = bindparam(name, type_=ARRAY(of))
        return func.unnest(param).table_valued("value").render_derived(name="listed")
    return func.json_each(bindparam(name, type_=Text())).table_valued("value").alias("listed")


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
        listed = _listed(dialect, "exts", String())
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
        missing: ColumnElement[int] = literal(-1)
        if flags:
            missing = case(*((~flag, i) for i, flag in enumerate(flags)), else_=-1)
        joined = select().select_from(listed).join(Customer, Customer.external_id == listed.c.value)
        self.statement = joined.add_columns(
            Customer.id, Customer.external_id, Customer.deleted_at.is_not(None), missing
        )
        # One CASE, each EXISTS evaluated at most once a row: decided customers collapse
        # into a negative key, the others keep their id (a group of one).
        whens: list[tuple[Any, Any]] = [(Customer.deleted_at.is_not(None), KEY_DELETED)]
        for i, flag in enumerate(flags):
            whens.append((~flag, missing_key(i) if self.reasons[i] is not None else Customer.id))
        key = case(*whens, else_=Customer.id) if rule is not None else Customer.id
        keyed = joined.add_columns(key.label("key"), Customer.external_id).subquery("keyed")
        self.grouped_statement = select(
            keyed.c.key, func.count(), func.min(keyed.c.external_id)
        ).group_by(keyed.c.key)
        ids = _listed(dialect, "ids", BigInteger())
        chosen = select().select_from(ids).join(Customer, Customer.id == ids.c.value)
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
        self.details_statement = chosen.add_columns(
            Customer.id,
            suppression,
            capped,
            cast(Customer.opt_outs, Text),
            cast(Customer.sensitive_topics, Text),
        )

    def _param(self, values: Sequence[Any]) -> Any:
        return list(values) if self.dialect == "postgresql" else json.dumps(list(values))

    def run(self, session: Session, external_ids: Sequence[str]) -> dict[str, Any]:
        """Rows (ID, EXT, DELETED, MISSING) by external id; absent: no such customer."""
        if not external_ids:
            return {}
        params = {"exts": self._param(external_ids)}
        return {r[EXT]: r for r in session.connection().execute(self.statement, params)}

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
        return {r[0]: r for r in session.connection().execute(self.details_statement, params)}


__all__ = [
    "DELETED",
    "EXT",
    "FUTURE_SLACK",
    "ID",
    "KEY_DELETED",
    "MISSING",
    "Screener",
    "decided_reasons",
    "missing_key",
]
