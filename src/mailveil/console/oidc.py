"""Signing in through the operator's OpenID Connect provider, with Authlib: the
authorisation-code flow with PKCE, state and nonce, the ID token's signature, issuer,
audience and expiry checked against the provider's published keys; then the userinfo
claims. Which roles a person holds and which employee they are come from two claims
(``console_oidc_roles_claim``, ``console_oidc_principal_claim``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.requests import Request

from mailveil.config import Settings
from mailveil.console.sessions import SignInRefused

WELL_KNOWN = "/.well-known/openid-configuration"


def oidc_client(settings: Settings) -> Any:
    """The Authlib client for the configured provider, or None when there is none."""
    if not settings.console_oidc_issuer:
        return None
    oauth = OAuth()
    return oauth.register(
        "provider",
        server_metadata_url=settings.console_oidc_issuer.rstrip("/") + WELL_KNOWN,
        client_id=settings.console_oidc_client_id,
        client_secret=settings.console_oidc_client_secret,
        client_kwargs={"scope": settings.console_oidc_scopes, "code_challenge_method": "S256"},
    )


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    principal_ref: str
    roles: list[str]
    name: str


def _roles(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


async def begin(client: Any, request: Request, redirect_uri: str) -> Any:
    return await client.authorize_redirect(request, redirect_uri)


async def finish(client: Any, request: Request, settings: Settings) -> Identity:
    """The person the provider vouches for (SignInRefused when it does not)."""
    try:
        token = await client.authorize_access_token(request)
    except OAuthError as exc:
        raise SignInRefused(f"the identity provider refused: {exc.error}") from exc
    claims: dict[str, Any] = dict(token.get("userinfo") or {})
    if not claims.get("sub"):
        raise SignInRefused("the identity provider sent no verified ID token")
    try:
        more = await client.userinfo(token=token)
    except Exception:  # the ID token is enough when there is no userinfo endpoint
        more = {}
    if more and more.get("sub") not in (None, claims["sub"]):
        raise SignInRefused("the provider's userinfo names someone else than its ID token")
    claims = {**dict(more or {}), **claims}
    principal_ref = claims.get(settings.console_oidc_principal_claim)
    if not isinstance(principal_ref, str) or not principal_ref:
        raise SignInRefused(
            f"the identity provider sent no {settings.console_oidc_principal_claim!r} claim"
        )
    return Identity(
        issuer=str(claims.get("iss") or settings.console_oidc_issuer),
        subject=str(claims["sub"]),
        principal_ref=principal_ref,
        roles=_roles(claims.get(settings.console_oidc_roles_claim)),
        name=str(claims.get("name") or ""),
    )


__all__ = ["Identity", "begin", "finish", "oidc_client"]
