"""The API's database: its own pool, and a clear answer when the database is busy or gone.

``mailveil serve`` runs the API beside the relay; each gets its own pool so a burst of API
requests cannot take the connections the relay needs to accept mail (and the reverse). The
pool is small and quick to give up: a request that cannot get a connection within
``api_db_pool_timeout_seconds`` is shed with 503 and ``Retry-After`` instead of stalling for
SQLAlchemy's default 30 s. On SQLite, writing requests begin IMMEDIATE and wait up to
``api_db_busy_timeout_seconds`` for the write lock.

Every database failure is answered by an exception handler (so the client's keep-alive
connection survives; only an exception nothing handles makes the server drop it): busy or
unreachable → 503 with Retry-After, a value the database cannot hold → 422.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from mailveil.api.problems import problem
from mailveil.config import Settings
from mailveil.db.session import (
    make_engine,
    make_session_factory,
    write_session_factory,
)
from mailveil.logs import scrub
from mailveil.runtime import Runtime

# Seconds a client is told to wait: a busy database frees up in moments; a lost one (a
# PostgreSQL restart) takes a little longer to come back.
RETRY_BUSY = 1
RETRY_UNAVAILABLE = 2
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def api_engine(settings: Settings, url: str | None = None, **kwargs: Any) -> Engine:
    """An engine sized and timed for the API from its settings (``url`` and ``kwargs`` let a
    test or benchmark point it at a database of its own)."""
    return make_engine(
        settings,
        url,
        sqlite_busy_ms=int(settings.api_db_busy_timeout_seconds * 1000),
        pool_size=settings.api_db_pool_size,
        max_overflow=settings.api_db_max_overflow,
        pool_timeout=settings.api_db_pool_timeout_seconds,
        **kwargs,
    )


def api_runtime(runtime: Runtime, engine: Engine | None = None) -> Runtime:
    """The runtime with the API's own engine (pool) on the same database."""
    engine = engine or api_engine(runtime.settings)
    return dataclasses.replace(runtime, engine=engine, session_factory=make_session_factory(engine))


def classify(exc: sa_exc.SQLAlchemyError) -> tuple[int, str, str, str, int | None]:
    """(status, problem code, title, detail, Retry-After seconds or None) for a DB error."""
    if isinstance(exc, sa_exc.TimeoutError):
        return (
            503,
            "database-busy",
            "Service busy",
            "every database connection is in use; retry shortly",
            RETRY_BUSY,
        )
    orig = getattr(exc, "orig", None)
    if isinstance(orig, OverflowError) or isinstance(exc, sa_exc.DataError):
        return 422, "out-of-range", "Invalid input", "a value is out of range", None
    if isinstance(exc, sa_exc.OperationalError) and any(
        marker in str(orig).lower() for marker in _SQLITE_BUSY
    ):
        return (
            503,
            "database-busy",
            "Service busy",
            "the database is busy with other writes; retry shortly",
            RETRY_BUSY,
        )
    disconnected = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    if disconnected or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return (
            503,
            "database-unavailable",
            "Service unavailable",
            "the database cannot be reached; retry shortly",
            RETRY_UNAVAILABLE,
        )
    return (
        500,
        "internal-error",
        "Internal error",
        "the server failed to handle this request; it has been logged",
        None,
    )


def install_database_handlers(app: FastAPI) -> None:
    log = structlog.get_logger("mailveil.api")

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def _database(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        status, code, title, detail, retry = classify(exc)
        path = scrub(request.url.path, request.app.state.runtime.settings.relay_domain)
        # The type and cause name what went wrong; the message may hold data, so not logged.
        cause = type(getattr(exc, "orig", None) or exc).__name__
        log.warning("database_error", path=path, status=status, error_type=cause)
        headers: dict[str, Any] = {"Retry-After": str(retry)} if retry is not None else {}
        return problem(status, code, title, detail, path, headers=headers)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        path = scrub(request.url.path, request.app.state.runtime.settings.relay_domain)
        return problem(422, "out-of-range", "Invalid input", "a value is out of range", path)


__all__ = [
    "api_engine",
    "api_runtime",
    "classify",
    "install_database_handlers",
    "write_session_factory",
]
