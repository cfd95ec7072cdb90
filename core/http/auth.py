"""Authentication of the current request and authorization decisions (SPEC §3, §4.1, §6).

Used by :func:`core.http.guard.check` in this order: :func:`authenticate` (local work only:
the JWT's signature and claims, or the API key's cached record) → :func:`check_revocation`
(the values of :func:`revocation_keys`, read by the limiter in its single Redis round trip,
or read here) → :func:`authorize` (roles and scopes; the error is *returned* so the guard can
report it after the ban check).

401 ``unauthorized``: no credential, or one that is invalid, expired or revoked — always the
same generic message. 403 ``forbidden``: a valid credential without the role/scope, or of the
wrong kind (an API key on a ``user`` endpoint, a user token on an ``api_key`` one).
"""

from __future__ import annotations

from typing import Any

from flask import Request, current_app, g, request
from flask.ctx import _AppCtxGlobals

from core.auth.identity import Principal, Requirement
from core.errors import Forbidden, HTTPError, Unauthorized
from core.http.state import get_state

ADMIN_ROLE = "admin"


def _am() -> Any:
    return current_app.extensions["keel"]


def authenticate(req: Request | None = None, ctx_g: _AppCtxGlobals | None = None, am: Any = None) -> Principal | None:
    """The caller of the current request, ``None`` when no credential was sent.

    Credentials: the ``X-API-Key`` header, or ``Authorization: Bearer <jwt>``. Never the query
    string. Sending both is refused. Anything invalid raises :class:`Unauthorized`.
    ``req``/``ctx_g``/``am``: the current request, ``g`` and AppManager when the caller holds
    them (the guard does), to spare the context look-ups.
    """
    if ctx_g is None:
        ctx_g = g._get_current_object()
    state = get_state(ctx_g)
    if state.authenticated:
        if state.auth_error is not None:
            raise Unauthorized()
        principal: Principal | None = state.principal
        return principal
    if req is None:
        req = request._get_current_object()  # type: ignore[attr-defined]
    try:
        principal = _authenticate(req, am)
    except Unauthorized as exc:
        state.authenticated, state.auth_error = True, exc
        raise
    state.authenticated, state.principal = True, principal
    return principal


def _authenticate(req: Request, am: Any) -> Principal | None:
    environ = req.environ  # what request.headers.get("X-API-Key") / ("Authorization") read
    api_key = environ.get("HTTP_X_API_KEY")
    authorization = environ.get("HTTP_AUTHORIZATION")
    if api_key is None and authorization is None:
        return None
    if api_key is not None and authorization is not None:
        raise Unauthorized()
    if am is None:
        am = _am()
    if api_key is not None:
        principal: Principal = am.api_keys.authenticate(api_key)
        return principal
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    claims = am.jwt.decode(token, "access")
    return Principal(
        kind="user",
        id=claims["sub"],
        name=claims["name"],
        roles=tuple(claims["roles"]),
        claims=claims,
    )


def revocation_keys(principal: Principal) -> list[str]:
    """The Redis keys whose values decide whether ``principal`` is revoked (for the limiter's
    single round trip); pass their values, in this order, to :func:`check_revocation`."""
    am = _am()
    if principal.kind == "api_key":
        return list(am.api_keys.revocation_keys(principal))
    return list(am.jwt.revocation_keys(principal))


def check_revocation(principal: Principal, values: list[Any] | None = None) -> None:
    """Raise :class:`Unauthorized` if ``principal``'s credential is revoked.

    ``values``: what the caller read for :func:`revocation_keys` (``None`` = not read; then
    Redis, or the database when Redis is down, answers; both down → 503).
    """
    am = _am()
    if principal.kind == "api_key":
        am.api_keys.check_revocation(principal, values)
    else:
        am.jwt.check_revocation(principal, values)


def authorize(principal: Principal | None, requirement: Requirement) -> HTTPError | None:
    """The error to answer with, or ``None`` when ``principal`` may do what ``requirement`` asks.

    ``auth``: public | user | api_key | any. ``roles``: a user must hold one (``admin`` holds
    every role); an API key cannot hold roles, so an endpoint with roles and no scopes is closed
    to keys. ``scopes``: an API key must hold all of them (users are governed by roles).
    """
    if requirement.auth == "public":
        return None
    if principal is None:
        return Unauthorized()
    if requirement.auth == "user" and principal.kind != "user":
        return Forbidden("This endpoint needs a user token, not an API key.")
    if requirement.auth == "api_key" and principal.kind != "api_key":
        return Forbidden("This endpoint needs an API key.")
    if principal.kind == "user":
        if requirement.roles and ADMIN_ROLE not in principal.roles:
            if not set(requirement.roles) & set(principal.roles):
                return Forbidden("A required role is missing.")
        return None
    if requirement.scopes:
        if not set(requirement.scopes) <= set(principal.scopes):
            return Forbidden("The API key lacks a required scope.")
    elif requirement.roles:
        return Forbidden("This endpoint needs a user with a role; API keys hold scopes only.")
    return None


def context_identity(principal: Principal | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(ctx.user, ctx.api_key)`` for an :class:`~core.module.ActionContext`."""
    if principal is None:
        return None, None
    if principal.kind == "user":
        return {"id": int(principal.id), "username": principal.name, "roles": list(principal.roles)}, None
    return None, {"id": principal.id, "name": principal.name, "scopes": list(principal.scopes)}
