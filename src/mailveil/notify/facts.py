"""Facts: what happened to a customer, as the marketplace's systems report it.

Facts are the only source of eligibility: a send names fact ids as evidence, and they are
looked up here, never taken from the send. A fact id is the reporting system's own; posting
the same fact again is a no-op, posting a different one under a used id is a conflict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, select, text
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.contacts.models import Customer
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, InvalidInput, MailveilError, NotFound
from mailveil.notify.models import Fact
from mailveil.policy.facts import chunks

KIND = re.compile(r"[a-z][a-z0-9_]{0,30}(\.[a-z][a-z0-9_]{0,30}){0,3}")
MAX_ATTRIBUTES_BYTES = 8 * 1024
# Facts created by one import after which PostgreSQL is asked to ANALYZE them (ingest_lines).
ANALYZE_AFTER = 10_000
_facts = cast(Table, Fact.__table__)


class FactIn(NamedTuple):
    fact_id: str
    kind: str
    customer: str  # external id
    occurred_at: datetime
    attributes: dict[str, Any]


class FactResult(NamedTuple):
    line: int
    fact_id: str | None
    status: str  # created | unchanged | error
    error: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line, "id": self.fact_id, "status": self.status}
        if self.error:
            out.update(error=self.error, detail=self.detail)
        return out


def parse_time(value: Any, what: str = "time") -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be an ISO 8601 time with a zone")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{what} must be an ISO 8601 time with a zone") from exc
    if parsed.tzinfo is None:
        raise InvalidInput(f"{what} must name its time zone (e.g. Z)")
    return parsed.astimezone(UTC)


def check_kind(value: Any) -> str:
    if not isinstance(value, str) or not KIND.fullmatch(value):
        raise InvalidInput("kind must be dotted lowercase names, e.g. registry.gift_purchased")
    return value


def validate_fact(record: Any) -> FactIn:
    if not isinstance(record, Mapping):
        raise InvalidInput("a fact must be a JSON object")
    unknown = set(record) - {"id", "kind", "customer", "time", "attributes"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    fact_id = v.external_id(record.get("id"), "id")
    customer = v.external_id(record.get("customer"), "customer")
    attributes = record.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidInput("attributes must be an object")
    try:
        size = len(json.dumps(attributes, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput("attributes must be plain JSON") from exc
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidInput(f"attributes are larger than {MAX_ATTRIBUTES_BYTES} bytes")
    if "\x00" in json.dumps(attributes):
        raise InvalidInput("attributes must not contain NUL characters")
    return FactIn(
        fact_id,
        check_kind(record.get("kind")),
        customer,
        parse_time(record.get("time")),
        attributes,
    )


def _same(row: Any, fact: FactIn, customer_id: int) -> bool:
    return bool(
        row.kind == fact.kind
        and row.customer_id == customer_id
        and row.occurred_at == fact.occurred_at
        and row.attributes == fact.attributes
    )


def ingest_batch(session: Session, records: Sequence[tuple[int, Any]]) -> list[FactResult]:
    """Validate and store (line, record) pairs; one result each. Flushes, does not commit."""
    results: dict[int, FactResult] = {}
    good: list[tuple[int, FactIn]] = []
    for line, record in records:
        try:
            good.append((line, validate_fact(record)))
        except MailveilError as exc:
            fid = record.get("id") if isinstance(record, Mapping) else None
            shown = fid if isinstance(fid, str) and len(fid) <= 255 else None
            results[line] = FactResult(line, shown, "error", exc.code, exc.detail)
    customers: dict[str, int] = {}
    for part in chunks(sorted({f.customer for _, f in good})):
        rows = session.execute(
            select(Customer.external_id, Customer.id).where(Customer.external_id.in_(part))
        )
        customers.update((ext, cid) for ext, cid in rows)
    existing: dict[str, Any] = {}
    for part in chunks(sorted({f.fact_id for _, f in good})):
        for row in session.execute(
            select(
                Fact.fact_id, Fact.kind, Fact.customer_id, Fact.occurred_at, Fact.attributes
            ).where(Fact.fact_id.in_(part))
        ):
            existing[row.fact_id] = row
    now = utcnow()
    new: list[dict[str, Any]] = []
    for line, fact in good:
        cid = customers.get(fact.customer)
        if cid is None:
            detail = f"no customer with external id {v.shown(fact.customer)}"
            results[line] = FactResult(line, fact.fact_id, "error", NotFound.code, detail)
            continue
        found = existing.get(fact.fact_id)
        if found is not None:
            if _same(found, fact, cid):
                results[line] = FactResult(line, fact.fact_id, "unchanged")
            else:
                detail = "a different fact was already recorded under this id"
                results[line] = FactResult(line, fact.fact_id, "error", Conflict.code, detail)
            continue
        existing[fact.fact_id] = _Row(fact.kind, cid, fact.occurred_at, fact.attributes)
        new.append(
            {
                "fact_id": fact.fact_id,
                "kind": fact.kind,
                "customer_id": cid,
                "occurred_at": fact.occurred_at,
                "attributes": fact.attributes,
                "created_at": now,
            }
        )
        results[line] = FactResult(line, fact.fact_id, "created")
    if new:
        session.execute(_facts.insert(), new)
    return [results[line] for line, _ in records]


class _Row(NamedTuple):
    kind: str
    customer_id: int
    occurred_at: datetime
    attributes: dict[str, Any]


def ingest_fact(session: Session, record: Any) -> FactResult:
    """One fact; domain errors are raised. Does not commit."""
    result = ingest_batch(session, [(1, record)])[0]
    if result.status == "error":
        kinds: dict[str, type[MailveilError]] = {
            NotFound.code: NotFound,
            Conflict.code: Conflict,
        }
        raise kinds.get(result.error or "", InvalidInput)(result.detail or "invalid fact")
    return result


def ingest_lines(
    session: Session,
    lines: Iterable[bytes],
    *,
    batch_size: int = 2000,
    analyze_after: int = ANALYZE_AFTER,
) -> Iterator[FactResult]:
    """NDJSON facts, committed a batch at a time (memory bounded by the batch). On
    PostgreSQL an import that created ``analyze_after`` facts or more ends with ANALYZE."""
    batch: list[tuple[int, Any]] = []
    created = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            record = _Malformed()
        batch.append((number, record))
        if len(batch) >= batch_size:
            results = _commit(session, batch)
            created += sum(r.status == "created" for r in results)
            yield from results
            batch = []
    if batch:
        results = _commit(session, batch)
        created += sum(r.status == "created" for r in results)
        yield from results
    if created >= analyze_after and session.get_bind().dialect.name == "postgresql":
        # Until autovacuum gets to it, a table just filled has no statistics: the planner
        # then probes the eligibility EXISTS through (kind, occurred_at) and filters every
        # fact of the kind per customer (200,000 recipients took 75 s to store instead of 7).
        session.execute(text(f"ANALYZE {Fact.__tablename__}"))
        session.commit()


class _Malformed(dict[str, Any]):
    """A line that is not JSON: validate_fact refuses it as not an object."""


def _commit(session: Session, batch: list[tuple[int, Any]]) -> list[FactResult]:
    fixed = [
        (n, None if isinstance(r, _Malformed) else r)  # None -> "must be a JSON object"
        for n, r in batch
    ]
    results = ingest_batch(session, fixed)
    session.commit()
    return results


def fact_view(row: Fact, customer_external_id: str) -> dict[str, Any]:
    return {
        "id": row.fact_id,
        "kind": row.kind,
        "customer": customer_external_id,
        "time": row.occurred_at.isoformat(),
        "attributes": row.attributes,
    }


def get_fact(session: Session, fact_id: str) -> dict[str, Any]:
    found = session.execute(
        select(Fact, Customer.external_id)
        .join(Customer, Customer.id == Fact.customer_id)
        .where(Fact.fact_id == fact_id)
    ).first()
    if found is None:
        raise NotFound(f"no fact with id {v.shown(fact_id)}")
    return fact_view(found[0], found[1])


__all__ = [
    "FactIn",
    "FactResult",
    "check_kind",
    "fact_view",
    "get_fact",
    "ingest_batch",
    "ingest_fact",
    "ingest_lines",
    "parse_time",
    "validate_fact",
]
