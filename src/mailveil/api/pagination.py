"""Keyset pagination: ``?limit=&after=<last id>``, answered with ``items`` and ``next``."""

from __future__ import annotations

from typing import Any


def clamp_limit(limit: int | None, default: int, maximum: int) -> int:
    if limit is None:
        return default
    return max(1, min(limit, maximum))


def next_cursor(rows: list[Any], limit: int, key: str = "id") -> str | None:
    """Rows were fetched with limit + 1; a surplus row means there is a next page."""
    if len(rows) <= limit:
        return None
    return str(getattr(rows[limit - 1], key))
