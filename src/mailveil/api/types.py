"""Bounded integers for every id, cursor, count and limit the API takes, in one place.

A database integer is 64-bit signed: anything larger reached the driver and overflowed (a
500 that also told apart which routes touched the database). Declaring the bounds here puts
them in the OpenAPI document and answers an out-of-range value with a 422 problem before any
query runs. Every router uses these for path, query and body integers alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, BeforeValidator, Field

from mailveil.contacts.validation import ISO_COUNTRIES

# The largest integer the API takes: the largest a database INTEGER column holds (ids,
# versions, sequence numbers); beyond it PostgreSQL refuses the value and SQLite's driver
# overflows. Well inside what a JSON number carries exactly (2^53 - 1).
MAX_DB_INT = 2**31 - 1
# The most rows one page may ask for; the router fetches one more to find the next page.
MAX_PAGE = 1000


def _integer_only(value: Any) -> Any:
    # JSON true/false is not a number (pydantic would take it as 1/0); the document says
    # "integer", so the server must not accept more than that.
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


def _iso_only(value: Any) -> Any:
    # pydantic reads a number ("0.5") as a Unix time; the document says ISO 8601 date-time.
    if not isinstance(value, str | datetime) or (isinstance(value, str) and "T" not in value):
        raise ValueError("expected an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    return value


def _iso_country(value: str) -> str:
    # Upper or lower case (clients send both), nothing else: the document lists exactly these.
    if value.upper() not in ISO_COUNTRIES or value not in (value.upper(), value.lower()):
        raise ValueError("expected an ISO 3166-1 alpha-2 country code, e.g. DE")
    return value.upper()


# No surrounding white space, no '@', no control characters (contacts.validation's rules).
EXTERNAL_ID_PATTERN = r"^[^\s@\x00-\x1f\x7f](?:[^@\x00-\x1f\x7f]*[^\s@\x00-\x1f\x7f])?$"


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("the date-time must carry a time zone (e.g. Z)")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_aware)]
"""An ISO 8601 date-time with a time zone."""

Country = Annotated[
    str,
    Field(
        json_schema_extra={"enum": sorted(ISO_COUNTRIES | {c.lower() for c in ISO_COUNTRIES})},
        description="ISO 3166-1 alpha-2 (upper or lower case)",
    ),
    AfterValidator(_iso_country),
]
"""A country as the document lists it: one of the ISO 3166-1 alpha-2 codes."""

ExternalId = Annotated[str, Field(min_length=1, max_length=255, pattern=EXTERNAL_ID_PATTERN)]
"""The marketplace's own id: no '@' (it would carry an address), no control characters, no
surrounding white space."""

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
"""A name: 1-64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit."""

Email = Annotated[str, Field(max_length=320, json_schema_extra={"format": "email"})]
"""An e-mail address (checked with email-validator; never echoed in an error)."""

Id = Annotated[int, Ge(1), Le(MAX_DB_INT), BeforeValidator(_integer_only)]
"""A row id (customer, principal, incident, request, send, order, case...)."""

Cursor = Annotated[int, Ge(0), Le(MAX_DB_INT), BeforeValidator(_integer_only)]
"""An ``after=`` cursor or a ledger sequence number."""

Limit = Annotated[int, Ge(1), Le(MAX_PAGE), BeforeValidator(_integer_only)]
"""A page size."""

Version = Annotated[int, Ge(0), Le(MAX_DB_INT), BeforeValidator(_integer_only)]
"""An optimistic-concurrency version (0 before the first write)."""

Count = Annotated[int, Ge(1), Le(MAX_DB_INT), BeforeValidator(_integer_only)]
"""A version, a tree size or another positive count stored in the database."""

__all__ = [
    "MAX_DB_INT",
    "MAX_PAGE",
    "Count",
    "Country",
    "Cursor",
    "Email",
    "ExternalId",
    "Id",
    "Limit",
    "Moment",
    "Slug",
    "Version",
]
