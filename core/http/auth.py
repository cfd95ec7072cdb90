"""Authentication of the current request (SPEC §3, §6): who is calling, and is it revoked?

Used by :func:`core.http.guard.check`: :func:`authenticate` (local work only: the JWT's
signature and claims, or the API key's cached record), then :func:`check_revocation` (the
values of :func:`revocation_keys`, read by the limiter in its single Redis round trip, or read
here). What the caller may then do is decided by :func:`core.auth.policy.authorize`.

401 ``unauthorized``: no credential, or one that is invalid, expired or revoked — always the
same generic message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Request, current_app, g, request
from flask.ctx import _AppCtxGlobals

from core.auth.identity import Principal
from core.errors import Unauthorized
from core.http.state import get_state

if TYPE_CHECKING:
    from core.app_manager import AppManager


def _am() -> AppManager:
    am: AppManager = current_app.extensions["keel"]
    return am


def authenticate(
    req: Request | None = None, ctx_g: _AppCtxGlobals | None = None, am: AppManager | None = None
) -> Principal | None:
    """The caller of the current request, ``None`` when no credential was sent.

    Credentials: the ``X-API-Key`` header, or ``Authorization: Bearer <jwt>``. Never the query
    string. Sending both is refused. Anything invalid raises :class:`Unauthorized`. The answer
    is kept on the request state, so asking twice costs nothing.
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


def _authenticate(req: Request, am: AppManager | None) -> Principal | None:
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
    assert authorization is not None
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


def revocation_keys(principal: Principal, am: AppManager | None = None) -> list[str]:
    """The Redis keys whose values decide whether ``principal`` is revoked (for the limiter's
    single round trip); pass their values, in this order, to :func:`check_revocation`."""
    if am is None:
        am = _am()
    if principal.kind == "api_key":
        return list(am.api_keys.revocation_keys(principal))
    return list(am.jwt.revocation_keys(principal))


def check_revocation(
    principal: Principal, values: list[Any] | None = None, am: AppManager | None = None
) -> Principal:
    """Raise :class:`Unauthorized` if ``principal``'s credential is revoked; else the principal
    to serve: ``principal`` itself, or, for an API key whose owner changed since its record was
    cached, the principal of the record read again (the owner's current roles).

    ``values``: what the caller read for :func:`revocation_keys` (``None`` = not read; then
    Redis, or the database when Redis is down, answers; both down → 503).
    """
    if am is None:
        am = _am()
    if principal.kind == "api_key":
        return am.api_keys.check_revocation(principal, values)
    am.jwt.check_revocation(principal, values)
    return principal
