"""One row or NotFound: the lookup every area's ``get_*`` function makes, in one place so that
a missing row is refused the same way everywhere ("no order 7", "no order with external id
'o-1'")."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from mailveil.errors import NotFound

T = TypeVar("T")


def get_or_not_found(session: Session, model: type[T], key: Any, what: str) -> T:
    """The ``model`` row with primary key ``key``; NotFound "no <what> <key>" otherwise."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(f"no {what} {key}")
    return row


def one_or_not_found(session: Session, stmt: Select[T], what: str) -> T:
    """The first row ``stmt`` selects; NotFound "no <what>" otherwise."""
    row = session.scalar(stmt)
    if row is None:
        raise NotFound(f"no {what}")
    return row
