"""Bounded integers for every id, cursor, count and limit the API takes, in one place.

A database integer is 64-bit signed: anything larger reached the driver and overflowed (a
500 that also told apart which routes touched the database). Declaring the bounds here puts
them in the OpenAPI document and answers an out-of-range value with a 422 problem before any
query runs. Every router uses these for path, query and body integers alike.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Le

# The largest value a BIGINT (and SQLite's INTEGER) can hold.
MAX_DB_INT = 2**63 - 1
# The most rows one page may ask for; the router fetches one more to find the next page.
MAX_PAGE = 1000

Id = Annotated[int, Ge(1), Le(MAX_DB_INT)]
"""A row id (customer, principal, incident, request, send, order, case...)."""

Cursor = Annotated[int, Ge(0), Le(MAX_DB_INT)]
"""An ``after=`` cursor or a ledger sequence number."""

Limit = Annotated[int, Ge(1), Le(MAX_PAGE)]
"""A page size."""

Version = Annotated[int, Ge(0), Le(MAX_DB_INT)]
"""An optimistic-concurrency version (0 before the first write)."""

Count = Annotated[int, Ge(1), Le(MAX_DB_INT)]
"""A version, a tree size or another positive count stored in the database."""

__all__ = ["MAX_DB_INT", "MAX_PAGE", "Count", "Cursor", "Id", "Limit", "Version"]
