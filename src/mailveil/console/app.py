"""The console as an ASGI app of its own, mounted by the API app at /console: its pages,
its static files (shipped in the package), the sign-in cookie middleware, the security
headers and the error pages."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles

from mailveil.console import (
    embed,
    views_auth,
    views_incidents,
    views_ledger,
    views_people,
    views_quarantine,
    views_reveals,
    views_sellers,
    views_sends,
    views_triage,
)
from mailveil.console.oidc import oidc_client
from mailveil.console.sessions import console_secret
from mailveil.console.web import (
    Console,
    LoginNeeded,
    error_page,
    login_redirect,
    security_headers,
    templates,
)
from mailveil.errors import InvalidInput, MailveilError, NotFound
from mailveil.runtime import Runtime


def create_console(runtime: Runtime, *, host_state: Any) -> FastAPI:
    """The console for ``runtime``; ``host_state`` is the hosting API app's state (shared
    with it: the send dispatcher)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    secret = console_secret(runtime.settings)
    console = Console(
        runtime=runtime,
        templates=templates(),
        secret=secret,
        host_state=host_state,
        oidc=oidc_client(runtime.settings),
    )
    app.state.console = console
    static = resources.files("mailveil.console").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    for module in (
        views_auth,
        views_incidents,
        views_triage,
        views_quarantine,
        views_sends,
        views_reveals,
        views_people,
        views_sellers,
        views_ledger,
        embed,
    ):
        app.include_router(module.router)

    @app.exception_handler(MailveilError)
    async def domain_error(request: Request, exc: MailveilError) -> Response:
        path = request.url.path
        if path.endswith(".json") or path.endswith("/embed/links"):  # machines' endpoints
            return JSONResponse(
                {"type": f"urn:mailveil:problem:{exc.code}", "title": exc.title,
                 "status": exc.status, "detail": exc.detail},
                status_code=exc.status,
                media_type="application/problem+json",
            )  # fmt: skip
        return error_page(request, exc)

    @app.exception_handler(LoginNeeded)
    async def login_needed(_request: Request, exc: LoginNeeded) -> Response:
        return login_redirect(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, exc: RequestValidationError) -> HTMLResponse:
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()})
        return error_page(request, InvalidInput(f"missing or malformed: {', '.join(fields)}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> HTMLResponse:
        if exc.status_code == 404:
            return error_page(request, NotFound("no such page"))
        problem = MailveilError(str(exc.detail))
        problem.status = exc.status_code
        return error_page(request, problem)

    app.middleware("http")(security_headers)
    # Only the short sign-in state (OIDC state and nonce, the login form's token, a flash
    # message) lives in this signed cookie; sessions themselves are on the server.
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret.hex(),
        session_cookie="mv_console_state",
        max_age=900,
        path="/console",
        same_site="lax",
        https_only=runtime.settings.console_public_url.startswith("https://"),
    )
    return app


__all__ = ["create_console"]
