"""Customers: create, look up (by id, external id or address), list, update, and a streaming
bulk import shared by ``POST /v1/customers`` (NDJSON) and ``mailveil customers import``.

A record is a mapping with ``external_id``, ``email``, ``country`` and optionally
``subdivision`` (ISO 3166-2, e.g. ``US-CA``: US breach laws apply by state), ``opt_outs``,
``sensitive_topics`` (lists, or ';'-separated text from CSV) and ``is_canary``.
Unknown fields are an error, so a misspelt column is reported rather than dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.contacts import validation as v
from mailveil.contacts.importing import ParseError
from mailveil.contacts.models import Customer
from mailveil.db.base import utcnow
from mailveil.db.lookup import get_or_not_found, one_or_not_found
from mailveil.errors import (
    Conflict,
    Duplicate,
    InvalidAddress,
    InvalidInput,
    MailveilError,
    NotFound,
)
from mailveil.vault import SealedAddress, Vault

FIELDS = (
    "external_id",
    "email",
    "country",
    "subdivision",
    "opt_outs",
    "sensitive_topics",
    "is_canary",
)
REQUIRED = ("external_id", "email", "country")
_table = cast(Table, Customer.__table__)


@dataclass(frozen=True)
class CustomerFields:
    external_id: str
    country: str
    opt_outs: list[str]
    sensitive_topics: list[str]
    is_canary: bool
    subdivision: str | None = None


def validate_record(record: Mapping[str, Any]) -> tuple[CustomerFields, str]:
    """Checked fields and the (still unvalidated) address; InvalidInput on the first problem."""
    if not isinstance(record, Mapping):
        raise InvalidInput("a customer record must be an object")
    unknown = [k for k in record if k not in FIELDS]
    if unknown:
        raise InvalidInput(f"unknown field {v.shown(unknown[0])} (allowed: {', '.join(FIELDS)})")
    for name in REQUIRED:
        if record.get(name) in (None, ""):
            raise InvalidInput(f"{name} is missing")
    country = v.country(record["country"])
    fields = CustomerFields(
        external_id=v.external_id(record["external_id"]),
        country=country,
        subdivision=v.subdivision(record.get("subdivision"), country),
        opt_outs=v.slug_list(record.get("opt_outs"), "opt_outs"),
        sensitive_topics=v.slug_list(record.get("sensitive_topics"), "sensitive_topics"),
        is_canary=v.boolean(record.get("is_canary"), "is_canary"),
    )
    return fields, record["email"]


def _row(fields: CustomerFields, sealed: SealedAddress) -> dict[str, Any]:
    now = utcnow()
    return {
        "external_id": fields.external_id,
        "address_ct": sealed.ciphertext,
        "address_dek": sealed.dek_id,
        "address_bidx": sealed.blind_index,
        "country": fields.country,
        "subdivision": fields.subdivision,
        "opt_outs": fields.opt_outs,
        "sensitive_topics": fields.sensitive_topics,
        "is_canary": fields.is_canary,
        "created_at": now,
        "updated_at": now,
    }


def _existing(session: Session, column: Any, values: list[Any]) -> dict[Any, int]:
    found: dict[Any, int] = {}
    for start in range(0, len(values), 2000):
        rows = session.execute(
            select(column, Customer.id).where(column.in_(values[start : start + 2000]))
        )
        found.update((bytes(k) if isinstance(k, bytes | memoryview) else k, i) for k, i in rows)
    return found


def create_customer(
    session: Session,
    vault: Vault,
    *,
    external_id: str,
    email: str,
    country: str,
    opt_outs: Iterable[str] = (),
    sensitive_topics: Iterable[str] = (),
    is_canary: bool = False,
    subdivision: str | None = None,
) -> Customer:
    """Validate, encrypt and insert one customer. Flushes, does not commit.

    Raises InvalidAddress / InvalidInput for bad fields and Duplicate when the external id or
    the address is already registered (nothing stored changes).
    """
    fields, address = validate_record(
        {
            "external_id": external_id,
            "email": email,
            "country": country,
            "subdivision": subdivision,
            "opt_outs": _listed(opt_outs),
            "sensitive_topics": _listed(sensitive_topics),
            "is_canary": is_canary,
        }
    )
    sealed = vault.seal(session, address, owner=fields.external_id)
    _check_unique(session, fields.external_id, sealed.lookup)
    try:
        with session.begin_nested():
            new_id = session.execute(
                insert(_table).returning(_table.c.id), [_row(fields, sealed)]
            ).scalar_one()
    except IntegrityError:
        # A concurrent writer got there between the check and the insert.
        _check_unique(session, fields.external_id, sealed.lookup)
        raise Duplicate(f"customer {fields.external_id!r} already exists") from None
    return get_customer(session, new_id)


def _safe_external_id(record: Any) -> str | None:
    # Only an external id that passes validation is repeated: a row with its columns
    # swapped has an address there.
    raw = record.get("external_id") if isinstance(record, Mapping) else None
    try:
        return v.external_id(raw)
    except InvalidInput:
        return None


def _listed(value: Any) -> Any:
    # Sets and tuples are fine lists; anything else goes to validation as it came.
    return list(value) if isinstance(value, tuple | set | frozenset) else value


def _check_unique(session: Session, external_id: str, indexes: tuple[bytes, ...]) -> None:
    by_ext = session.scalar(select(Customer.id).where(Customer.external_id == external_id))
    if by_ext is not None:
        raise Duplicate(f"external id {external_id!r} already exists (customer {by_ext})")
    by_addr = session.scalar(select(Customer.id).where(Customer.address_bidx.in_(indexes)).limit(1))
    if by_addr is not None:
        raise Duplicate(f"the address is already registered (customer {by_addr})")


def get_customer(session: Session, customer_id: int) -> Customer:
    return get_or_not_found(session, Customer, customer_id, "customer")


def get_customer_by_external_id(session: Session, external_id: str) -> Customer:
    ext = v.external_id(external_id)
    stmt = select(Customer).where(Customer.external_id == ext)
    return one_or_not_found(session, stmt, f"customer with external id {ext!r}")


def find_customer_by_address(session: Session, vault: Vault, address: str) -> Customer | None:
    """The customer with this address (blind-index lookup), or None."""
    indexes = vault.blind_indexes(address)
    return session.scalar(select(Customer).where(Customer.address_bidx.in_(indexes)).limit(1))


def customer_addresses_among(session: Session, vault: Vault, candidates: Iterable[str]) -> set[str]:
    """Which of these strings are some customer's real address (one blind-index query), so
    a shell can withhold them from what it shows."""
    by_index: dict[bytes, list[str]] = {}
    for text in set(candidates):
        try:
            for bidx in vault.blind_indexes(text):
                by_index.setdefault(bidx, []).append(text)
        except InvalidAddress:
            continue
    found: set[str] = set()
    keys = list(by_index)
    for start in range(0, len(keys), 500):
        for bidx in session.scalars(
            select(Customer.address_bidx).where(
                Customer.address_bidx.in_(keys[start : start + 500])
            )
        ):
            found.update(by_index[bytes(bidx)])
    return found


def get_customer_by_address(session: Session, vault: Vault, address: str) -> Customer:
    customer = find_customer_by_address(session, vault, address)
    if customer is None:
        raise NotFound("no customer has that address")
    return customer


def customer_address(session: Session, vault: Vault, customer: Customer) -> str:
    """The real address, decrypted. Only the relay (delivery) and approved reveals call this."""
    return vault.decrypt(
        session,
        customer.address_ct,
        customer.address_dek,
        customer.address_bidx,
        owner=customer.external_id,
    )


def list_customers(
    session: Session,
    *,
    after_id: int | None = None,
    limit: int = 100,
    include_deleted: bool = False,
    include_canaries: bool = False,
) -> list[Customer]:
    """Customers by id. Canaries are left out unless asked for: lists feed counts, and a
    canary is never counted as a customer."""
    stmt = select(Customer)
    if not include_deleted:
        stmt = stmt.where(Customer.deleted_at.is_(None))
    if not include_canaries:
        stmt = stmt.where(Customer.is_canary.is_(False))
    if after_id is not None:
        stmt = stmt.where(Customer.id > after_id)
    return list(session.scalars(stmt.order_by(Customer.id).limit(v.page_limit(limit))))


def update_customer(
    session: Session,
    customer_id: int,
    *,
    country: str | None = None,
    opt_outs: Iterable[str] | None = None,
    sensitive_topics: Iterable[str] | None = None,
    subdivision: str | None = None,
) -> Customer:
    """Change the given fields (all validated before any is written; ``subdivision`` ""
    clears it). Flushes."""
    new_country = None if country is None else v.country(country)
    new_opt = None if opt_outs is None else v.slug_list(_listed(opt_outs), "opt_outs")
    new_topics = (
        None
        if sensitive_topics is None
        else v.slug_list(_listed(sensitive_topics), "sensitive_topics")
    )
    customer = get_customer(session, customer_id)
    if subdivision is not None or (new_country is not None and new_country != customer.country):
        # A subdivision belongs to its country: a move abroad drops the old one.
        raw = subdivision if subdivision is not None else ""
        country = new_country or customer.country
        prefix, dash, _rest = raw.strip().upper().partition("-")
        if dash and prefix != country:
            # Valid on its own, but not in the customer's country: a conflict with what the
            # customer is, not a malformed request.
            raise Conflict(f"subdivision {v.shown(raw)} is not in the customer's country {country}")
        customer.subdivision = v.subdivision(raw, country)
    if new_country is not None:
        customer.country = new_country
    if new_opt is not None:
        customer.opt_outs = new_opt
    if new_topics is not None:
        customer.sensitive_topics = new_topics
    customer.updated_at = utcnow()
    session.flush()
    return customer


def change_customer_address(
    session: Session, vault: Vault, customer_id: int, email: str
) -> Customer:
    """Replace the address (aliases stay: they never depended on it). Flushes; the flush also
    forgets the hard bounces the relay counted against the old address (a listener in
    ``relay.bounces``: contacts does not reach into the relay's tables)."""
    customer = get_customer(session, customer_id)
    sealed = vault.seal(session, email, owner=customer.external_id)
    other = session.scalar(
        select(Customer.id)
        .where(Customer.address_bidx.in_(sealed.lookup), Customer.id != customer_id)
        .limit(1)
    )
    if other is not None:
        raise Duplicate(f"the address is already registered (customer {other})")
    customer.address_ct = sealed.ciphertext
    customer.address_dek = sealed.dek_id
    customer.address_bidx = sealed.blind_index
    customer.updated_at = utcnow()
    session.flush()
    return customer


def delete_customer(session: Session, customer_id: int) -> Customer:
    """Mark deleted: kept for the ledger's references; policies refuse disclosures."""
    customer = get_customer(session, customer_id)
    if customer.deleted_at is None:
        customer.deleted_at = utcnow()
        customer.updated_at = customer.deleted_at
        session.flush()
    return customer


def customer_view(customer: Customer) -> dict[str, Any]:
    """JSON-ready, without the address (nothing outside the vault and relay handles it)."""
    return {
        "id": customer.id,
        "external_id": customer.external_id,
        "country": customer.country,
        "subdivision": customer.subdivision,
        "opt_outs": list(customer.opt_outs or []),
        "sensitive_topics": list(customer.sensitive_topics or []),
        "is_canary": customer.is_canary,
        "created_at": customer.created_at.isoformat(),
        "deleted_at": customer.deleted_at.isoformat() if customer.deleted_at else None,
    }


# -- bulk import ----------------------------------------------------------------------------

Status = Literal["created", "duplicate", "error"]


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    line: int
    status: Status
    external_id: str | None = None
    customer_id: int | None = None
    reason: str | None = None
    code: str | None = None  # the error's problem code (e.g. "invalid-address", "duplicate")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line, "status": self.status}
        for name in ("external_id", "customer_id", "reason", "code"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def import_customers(
    session: Session,
    vault: Vault,
    records: Iterable[tuple[int, Mapping[str, Any]] | ParseError],
    *,
    batch_size: int = 500,
    commit: bool = True,
) -> Iterator[ImportOutcome]:
    """Insert records in batches, yielding one outcome per record in input order.

    Good rows are kept, bad rows reported with their line and a reason that never contains
    the address; a duplicate (within the input or already stored) changes nothing stored.
    With ``commit`` each batch is committed before its outcomes are yielded.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    batch: list[tuple[int, Mapping[str, Any]] | ParseError] = []
    for item in records:
        batch.append(item)
        if len(batch) >= batch_size:
            yield from _import_batch(session, vault, batch, commit)
            batch = []
    if batch:
        yield from _import_batch(session, vault, batch, commit)


def _import_batch(
    session: Session,
    vault: Vault,
    batch: list[tuple[int, Mapping[str, Any]] | ParseError],
    commit: bool,
) -> list[ImportOutcome]:
    outcomes: list[ImportOutcome | None] = [None] * len(batch)
    ready: list[tuple[int, int, CustomerFields, SealedAddress]] = []
    seen_ext: dict[str, int] = {}
    seen_bidx: dict[bytes, int] = {}
    for pos, item in enumerate(batch):
        if isinstance(item, ParseError):
            outcomes[pos] = ImportOutcome(
                item.line, "error", reason=item.reason, code="invalid-input"
            )
            continue
        line, record = item
        try:
            fields, address = validate_record(record)
            sealed = vault.seal(session, address, owner=fields.external_id)
        except MailveilError as exc:
            outcomes[pos] = ImportOutcome(
                line, "error", _safe_external_id(record), reason=exc.detail, code=exc.code
            )
            continue
        if fields.external_id in seen_ext:
            outcomes[pos] = ImportOutcome(
                line,
                "duplicate",
                fields.external_id,
                code=Duplicate.code,
                reason=f"external id repeats line {seen_ext[fields.external_id]}",
            )
            continue
        if sealed.blind_index in seen_bidx:
            outcomes[pos] = ImportOutcome(
                line,
                "duplicate",
                fields.external_id,
                code=Duplicate.code,
                reason=f"the address repeats line {seen_bidx[sealed.blind_index]}",
            )
            continue
        seen_ext[fields.external_id] = line
        seen_bidx[sealed.blind_index] = line
        ready.append((pos, line, fields, sealed))

    by_ext = _existing(session, Customer.external_id, [r[2].external_id for r in ready])
    by_bidx = _existing(session, Customer.address_bidx, [b for r in ready for b in r[3].lookup])
    insertable = []
    for pos, line, fields, sealed in ready:
        ext = fields.external_id
        if ext in by_ext:
            outcomes[pos] = ImportOutcome(
                line,
                "duplicate",
                ext,
                by_ext[ext],
                code=Duplicate.code,
                reason=f"external id already exists (customer {by_ext[ext]})",
            )
        elif any(b in by_bidx for b in sealed.lookup):
            holder = next(by_bidx[b] for b in sealed.lookup if b in by_bidx)
            outcomes[pos] = ImportOutcome(
                line,
                "duplicate",
                ext,
                code=Duplicate.code,
                reason=f"the address is already registered (customer {holder})",
            )
        else:
            insertable.append((pos, line, fields, sealed))

    if insertable:
        try:
            with session.begin_nested():
                ids = (
                    session.execute(
                        insert(_table).returning(_table.c.id, sort_by_parameter_order=True),
                        [_row(f, s) for _, _, f, s in insertable],
                    )
                    .scalars()
                    .all()
                )
            for (pos, line, fields, _), new_id in zip(insertable, ids, strict=True):
                outcomes[pos] = ImportOutcome(line, "created", fields.external_id, new_id)
        except IntegrityError:
            # Someone inserted the same customer meanwhile: redo this batch row by row.
            for pos, line, fields, sealed in insertable:
                outcomes[pos] = _insert_one(session, line, fields, sealed)
    if commit:
        session.commit()
    return [o for o in outcomes if o is not None]


def _insert_one(
    session: Session, line: int, fields: CustomerFields, sealed: SealedAddress
) -> ImportOutcome:
    try:
        with session.begin_nested():
            new_id = session.execute(
                insert(_table).returning(_table.c.id), [_row(fields, sealed)]
            ).scalar_one()
    except IntegrityError:
        return ImportOutcome(
            line,
            "duplicate",
            fields.external_id,
            code=Duplicate.code,
            reason="external id or address already exists",
        )
    return ImportOutcome(line, "created", fields.external_id, new_id)


__all__ = [
    "FIELDS",
    "CustomerFields",
    "ImportOutcome",
    "change_customer_address",
    "create_customer",
    "customer_address",
    "customer_addresses_among",
    "customer_view",
    "delete_customer",
    "find_customer_by_address",
    "get_customer",
    "get_customer_by_address",
    "get_customer_by_external_id",
    "import_customers",
    "list_customers",
    "update_customer",
    "validate_record",
]
