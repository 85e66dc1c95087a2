"""Request-scoped dependencies: the runtime, a database session, the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from mailveil.auth.keys import Caller, Role, authenticate, require_role
from mailveil.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_session(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    # Routes commit explicitly, after their last write; anything left is rolled back here.
    session = runtime.session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def get_caller(
    request: Request,
    session: Annotated[Session, Depends(get_session)],
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    token = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
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
