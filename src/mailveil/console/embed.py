"""The customer's own access log, for the marketplace to show in its account settings: an
embeddable page and the same as JSON, in the customer's language.

The marketplace's backend (an admin or backend key) mints a short-lived link for one signed-
in customer (``POST /console/embed/links``); the link alone opens that customer's log and
nothing else, so the customer needs no mailveil account. Only the origins in
``console_embed_origins`` may frame the page or read the JSON from a browser."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, Field

from mailveil.access.access_log import access_log
from mailveil.auth.keys import Role, authenticate, require_role
from mailveil.console.i18n import language, words
from mailveil.console.web import DbDep, base_origin, console_of, guard_addresses
from mailveil.contacts.customers import get_customer
from mailveil.db.base import utcnow
from mailveil.errors import Forbidden, InvalidInput

router = APIRouter(prefix="/embed")
SALT = "mailveil.console.embed.access-log"


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: int = Field(ge=1)
    lang: str | None = Field(default=None, max_length=35)


def _serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(console_of(request).secret, salt=SALT)


def _customer_of(request: Request, token: str) -> tuple[int, str | None]:
    minutes = console_of(request).runtime.settings.console_embed_link_minutes
    try:
        data = _serializer(request).loads(token, max_age=int(minutes * 60))
    except SignatureExpired as exc:
        raise Forbidden("this link has expired; open the page again from your account") from exc
    except BadSignature as exc:
        raise Forbidden("this link is not valid") from exc
    return int(data["c"]), data.get("l")


def _frame_policy(request: Request) -> str:
    origins = console_of(request).runtime.settings.console_embed_origins
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        f"form-action 'self'; frame-ancestors 'self' {origins}".rstrip()
    )


@router.post("/links")
def mint(
    body: LinkIn, request: Request, session: DbDep, authorization: Annotated[str, Header()] = ""
) -> JSONResponse:
    """A link to one customer's access log (the marketplace's backend asks, per visit)."""
    scheme, _, token = authorization.partition(" ")
    caller = authenticate(session, token.strip() if scheme.lower() == "bearer" else None)
    require_role(caller, Role.ADMIN, Role.BACKEND)
    get_customer(session, body.customer_id)
    lang = language(body.lang) if body.lang else None
    signed = _serializer(request).dumps({"c": body.customer_id, "l": lang})
    query = urlencode({"t": signed})
    base = base_origin(request) + "/console/embed/access-log"
    minutes = console_of(request).runtime.settings.console_embed_link_minutes
    return JSONResponse(
        {
            "url": f"{base}?{query}",
            "json_url": f"{base}.json?{query}",
            "expires_at": (utcnow() + timedelta(minutes=minutes)).isoformat(),
        },
        headers={"Cache-Control": "no-store"},
    )


def _entries(request: Request, session: DbDep, customer_id: int, lang: str) -> list[dict[str, Any]]:
    settings = console_of(request).runtime.settings
    rows, _next = access_log(session, settings, customer_id, limit=500)
    w = words(lang)
    out = []
    for e in rows:
        item = e.to_dict()
        item["what_text"] = w.get(e.what, e.what)
        item["by_kind_text"] = w.get(e.by_kind, e.by_kind)
        item["purpose_text"] = w.get(e.purpose or "", e.purpose or "")
        out.append(item)
    return out


@router.get("/access-log", response_class=HTMLResponse)
def page(request: Request, session: DbDep, t: str = "", lang: str | None = None) -> HTMLResponse:
    customer_id, link_lang = _customer_of(request, t)
    chosen = language(lang, link_lang, request.headers.get("accept-language"))
    entries = _entries(request, session, customer_id, chosen)
    console = console_of(request)
    html = console.templates.get_template("embed_access_log.html").render(
        lang=chosen, w=words(chosen), entries=entries
    )
    html = guard_addresses(session, console.runtime, html)
    return HTMLResponse(html, headers={"Content-Security-Policy": _frame_policy(request)})


@router.get("/access-log.json")
def as_json(request: Request, session: DbDep, t: str = "", lang: str | None = None) -> Response:
    if not t:
        raise InvalidInput("the link's token (t) is missing")
    customer_id, link_lang = _customer_of(request, t)
    chosen = language(lang, link_lang, request.headers.get("accept-language"))
    headers = {"Content-Language": chosen}
    origin = request.headers.get("origin")
    if origin and origin in console_of(request).runtime.settings.console_embed_origins.split():
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    return JSONResponse(
        {"language": chosen, "entries": _entries(request, session, customer_id, chosen)},
        headers=headers,
    )


__all__ = ["router"]
