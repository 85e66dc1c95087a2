"""Signing in (an API key, or the OIDC provider), signing out, and the home page."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailveil.access.reveals import count_reveals
from mailveil.console import oidc
from mailveil.console.sessions import (
    Person,
    SignInRefused,
    sign_in_with_key,
    sign_in_with_oidc,
    sign_out,
)
from mailveil.console.web import (
    COOKIE,
    Actor,
    DbDep,
    Viewer,
    base_origin,
    console_of,
    page,
    redirect,
    retry_busy,
    secure_cookies,
)
from mailveil.detect.triage import queue_counts
from mailveil.errors import Forbidden
from mailveil.notify.progress import open_send_count
from mailveil.relay import quarantine

router = APIRouter()


def _next(value: str | None) -> str:
    # Only a path of the console itself: never another host (an open redirect).
    if value and value.startswith("/console/") and "//" not in value and "\\" not in value:
        return value
    return "/console/"


def _login_token(request: Request) -> str:
    token = request.session.get("login_csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["login_csrf"] = token
    return token


def _login_page(
    request: Request, session: DbDep, error: str | None, status: int = 200
) -> HTMLResponse:
    return page(
        request,
        session,
        None,
        "login.html",
        status=status,
        error=error,
        login_csrf=_login_token(request),
        next=_next(request.query_params.get("next")),
    )


def _signed_in(request: Request, token: str, target: str) -> RedirectResponse:
    response = redirect(target)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(console_of(request).runtime.settings.console_session_hours * 3600),
        path="/console",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )
    request.session.pop("login_csrf", None)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, session: DbDep) -> HTMLResponse:
    return _login_page(request, session, None)


@router.post("/login", response_model=None)
@retry_busy
def login(
    request: Request,
    session: DbDep,
    token: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    expected = request.session.get("login_csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(expected, csrf):
        return _login_page(request, session, "The form expired; sign in again.", 403)
    runtime = console_of(request).runtime
    try:
        session_token = sign_in_with_key(session, runtime.settings, runtime.ledger, token)
    except SignInRefused as exc:
        session.rollback()
        return _login_page(request, session, exc.detail, 401)
    session.commit()
    return _signed_in(request, session_token, _next(next))


@router.get("/oidc/login", response_model=None)
async def oidc_login(request: Request) -> Response:
    console = console_of(request)
    if console.oidc is None:
        raise Forbidden("no identity provider is configured; sign in with an API key")
    request.session["next"] = _next(request.query_params.get("next"))
    callback = base_origin(request) + "/console/oidc/callback"
    response: Response = await oidc.begin(console.oidc, request, callback)
    return response


@router.get("/oidc/callback", response_model=None)
async def oidc_callback(request: Request, session: DbDep) -> Response:
    console = console_of(request)
    if console.oidc is None:
        raise Forbidden("no identity provider is configured")
    runtime = console.runtime
    try:
        who = await oidc.finish(console.oidc, request, runtime.settings)
        token = sign_in_with_oidc(
            session,
            runtime.settings,
            runtime.ledger,
            issuer=who.issuer,
            subject=who.subject,
            principal_ref=who.principal_ref,
            granted=who.roles,
            name=who.name,
        )
    except SignInRefused as exc:
        session.rollback()
        return _login_page(request, session, exc.detail, 401)
    session.commit()
    return _signed_in(request, token, _next(request.session.pop("next", None)))


@router.post("/logout", response_model=None)
@retry_busy
def logout(
    request: Request, session: DbDep, person: Annotated[Person, Depends(Actor())]
) -> Response:
    runtime = console_of(request).runtime
    sign_out(session, runtime.ledger, person)
    session.commit()
    response = redirect("/console/login")
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/", response_class=HTMLResponse)
def home(
    request: Request, session: DbDep, person: Annotated[Person, Depends(Viewer())]
) -> HTMLResponse:
    settings = console_of(request).runtime.settings
    stats = {
        **queue_counts(session),
        "held": len(quarantine.held(settings.data_dir)),
        "sends": open_send_count(session),
        "reveals": count_reveals(session, "pending"),
    }
    return page(request, session, person, "home.html", stats=stats)


__all__ = ["router"]
