"""What every console page shares: the per-app context, the database session, the gates
(signed in, holding a role, with a valid CSRF token on every form), rendering with the
address guard, flash messages, and the security headers."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import quote

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailveil.auth.keys import Role
from mailveil.console.sessions import Person, check_csrf, current_person
from mailveil.contacts.customers import customer_addresses_among
from mailveil.errors import Forbidden, MailveilError
from mailveil.runtime import Runtime

COOKIE = "mv_console"
# Strict by default: only this origin's scripts, styles, images and forms; no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
WITHHELD = "[customer address withheld]"
BUSY_ATTEMPTS = 50
P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Console:
    """Built once per app by ``create_console``; pages reach it through the request."""

    runtime: Runtime
    templates: Environment
    secret: bytes
    host_state: Any  # the API app's state: the send dispatcher lives there
    oidc: Any = None  # the Authlib client when an OIDC provider is configured
    extra: dict[str, Any] = field(default_factory=dict)


class LoginNeeded(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def console_of(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def db(request: Request) -> Iterator[Session]:
    session = console_of(request).runtime.session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


DbDep = Annotated[Session, Depends(db)]


def retry_busy(action: Callable[P, T]) -> Callable[P, T]:
    """Run a form's action again on a fresh snapshot when SQLite refuses its write because
    another writer (the relay, a send worker) committed after it read; the refused attempt
    is rolled back whole, so nothing is done twice. The action takes ``session``."""

    @functools.wraps(action)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        session = kwargs["session"]
        assert isinstance(session, Session)
        for attempt in range(BUSY_ATTEMPTS):
            try:
                return action(*args, **kwargs)
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or attempt == BUSY_ATTEMPTS - 1:
                    raise
                session.rollback()
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    return run


def _person(request: Request, session: Session) -> Person | None:
    console = console_of(request)

    @retry_busy
    def look(*, session: Session) -> Person | None:
        person = current_person(session, console.runtime.settings, request.cookies.get(COOKIE))
        # Keep the touch of last_seen_at, and end the read: an action starts on a fresh
        # snapshot (SQLite refuses a write from a transaction that read before another
        # commit).
        session.commit()
        return person

    return look(session=session)


def _check_roles(person: Person, roles: tuple[Role, ...]) -> None:
    if roles and not person.has(*roles):
        wanted = ", ".join(r.value for r in roles)
        raise Forbidden(f"this page is for the roles: {wanted}")


class Viewer:
    """``Depends(Viewer(Role.X, ...))`` on a page: the signed-in person holding a role."""

    def __init__(self, *roles: Role) -> None:
        self.roles = roles

    def __call__(self, request: Request, session: DbDep) -> Person:
        person = _person(request, session)
        if person is None:
            raise LoginNeeded(request.url.path)
        _check_roles(person, self.roles)
        return person


class Actor(Viewer):
    """The same for a form's POST, which must also carry the session's CSRF token and
    come from this origin."""

    def __call__(
        self,
        request: Request,
        session: DbDep,
        csrf: Annotated[str | None, Form()] = None,
    ) -> Person:
        person = _person(request, session)
        if person is None:
            raise Forbidden("you are signed out; sign in again and repeat the action")
        origin = request.headers.get("origin")
        if origin and origin != "null" and origin != base_origin(request):
            raise Forbidden("the form was sent from another site")
        check_csrf(person, csrf)
        _check_roles(person, self.roles)
        return person


def base_origin(request: Request) -> str:
    public = console_of(request).runtime.settings.console_public_url
    if public:
        scheme, _, rest = public.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"
    return f"{request.url.scheme}://{request.url.netloc}"


def secure_cookies(request: Request) -> bool:
    return base_origin(request).startswith("https://")


def flash(request: Request, text: str) -> None:
    request.session["flash"] = text[:500]


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def guard_addresses(session: Session, runtime: Runtime, html: str, keep: str | None = None) -> str:
    """Withhold any real customer address a page would show (found by blind index), the
    last line behind every view: a stranger's message or an abuse report may quote one.
    ``keep``: the one address a granted reveal shows its own grantee."""
    domain = "@" + runtime.settings.relay_domain.lower()
    candidates = {
        m.group(0)
        for m in _ADDRESS.finditer(html)
        if not m.group(0).lower().endswith(domain) and m.group(0) != keep
    }
    if not candidates:
        return html
    real = customer_addresses_among(session, runtime.vault, candidates)
    for address in sorted(real, key=len, reverse=True):
        html = html.replace(address, WITHHELD)
    return html


def page(
    request: Request,
    session: Session,
    person: Person | None,
    template: str,
    *,
    status: int = 200,
    keep_address: str | None = None,
    **context: Any,
) -> HTMLResponse:
    console = console_of(request)
    html = console.templates.get_template(template).render(
        request=request,
        me=person,
        Role=Role,
        flash=request.session.pop("flash", None),
        oidc_label=console.runtime.settings.console_oidc_label if console.oidc else None,
        **context,
    )
    html = guard_addresses(session, console.runtime, html, keep_address)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, exc: MailveilError) -> HTMLResponse:
    console = console_of(request)
    html = console.templates.get_template("error.html").render(
        request=request,
        me=None,
        Role=Role,
        flash=None,
        oidc_label=None,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
    )
    session = console.runtime.session_factory()
    try:
        html = guard_addresses(session, console.runtime, html)
    finally:
        session.close()
    return HTMLResponse(html, status_code=exc.status)


def login_redirect(exc: LoginNeeded) -> RedirectResponse:
    return redirect("/console/login?next=" + quote(exc.path, safe="/"))


async def security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    if not request.url.path.startswith("/console/embed/"):  # framed by the marketplace
        response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if not request.url.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


# -- template helpers -----------------------------------------------------------------------


def _when(value: Any) -> str:
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC")


def _hours(value: float | None) -> str:
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    total = round(abs(value) * 60)
    return f"{sign}{total // 60} h {total % 60:02d} min"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def _words(value: str | None) -> str:
    return (value or "").replace("_", " ")


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("mailveil.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, hours=_hours, plural=_plural, pct=_pct, words=_words)
    return env


__all__ = [
    "COOKIE",
    "CSP",
    "Actor",
    "Console",
    "DbDep",
    "LoginNeeded",
    "Viewer",
    "console_of",
    "error_page",
    "flash",
    "guard_addresses",
    "login_redirect",
    "page",
    "redirect",
    "retry_busy",
    "security_headers",
    "templates",
]
