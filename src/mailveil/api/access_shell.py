"""What the employee-access routes share: recording refusals before answering them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from sqlalchemy.orm import Session

from mailveil.access.refusals import AccessRefused, record_refusal
from mailveil.runtime import Runtime


@contextmanager
def refusals_recorded(request: Request, session: Session, runtime: Runtime) -> Iterator[None]:
    """A refusal raised inside is written to the ledger (and counted) before it answers;
    the refused request's own work is rolled back."""
    try:
        yield
    except AccessRefused as exc:
        exc.extra["ledger_seq"] = record_refusal(session, runtime.ledger, exc)
        request.app.state.metrics.access_refusals.labels(exc.code).inc()
        raise


__all__ = ["refusals_recorded"]
