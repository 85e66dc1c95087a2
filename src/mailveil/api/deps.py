"""Request-scoped dependencies: the runtime, a database session, the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mailveil.auth.keys import Caller, Role, authenticate, require_role
from mailveil.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session(request: Request) -> Iterator[Session]:
    # Routes commit explicitly, after their last write; anything left is rolled back here.
    # Writing requests get sessions that wait their turn for SQLite's write lock.
    state = request.app.state
    factory = state.read_sessions if request.method in SAFE_METHODS else state.write_sessions
    session = factory()
    try:
        yield session
    finally:
        try:
            session.rollback()
        except SQLAlchemyError:
            # The connection is already gone (the database restarted): nothing to undo,
            # and the request has its answer; the pool replaces the connection.
            session.invalidate()
        session.close()


# Declared in the OpenAPI document (a bearer security scheme on every route that needs a
# key); the token itself is checked by authenticate(), one 401 for every failure.
bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")


def get_caller(
    request: Request,
    session: Annotated[Session, Depends(get_session)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> Caller:
    token = credentials.credentials.strip() if credentials is not None else None
    caller = authenticate(session, token)
    request.state.key_id = caller.key_id  # for the access log (api.metrics)
    # End the read transaction the lookup opened: a route's own work starts afresh, so on
    # SQLite its first write is not refused for a snapshot another writer has moved past.
    session.commit()
    return caller


class RoleGate:
    """``Depends(RoleGate(Role.ADMIN, ...))``: the caller, if it holds one of the roles."""

    def __init__(self, *roles: Role) -> None:
        self.roles = roles

    def __call__(self, caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        require_role(caller, *self.roles)
        return caller


SessionDep = Annotated[Session, Depends(get_session)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]
