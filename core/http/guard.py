"""The request guard: ban → authentication → authorization → rate limits (SPEC §4.4).

Every protected endpoint (each action, every ``@protect``-ed route) states what it needs as a
:class:`Requirement`; :func:`check` enforces it and returns the :class:`ActionContext`.

Its parts, each decided in one place:
- authentication: :func:`core.http.auth.authenticate` decodes the JWT / API key locally (no
  Redis) into a :class:`Principal`;
- authorization: :func:`core.auth.policy.authorize`, a pure decision on roles / scopes, decided
  first and *reported* after bans and authentication;
- revocation, bans and every limit: ONE call to the limiter (one Redis round trip), which also
  reads the principal's revocation keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Request, current_app, g, request
from flask.ctx import _AppCtxGlobals

from core.auth.identity import Principal, Requirement
from core.auth.policy import authorize
from core.errors import HTTPError, Unauthorized
from core.http import auth, limits
from core.http.client import request_ip
from core.http.state import get_state
from core.module import ActionContext

if TYPE_CHECKING:
    from core.app_manager import AppManager


def check(requirement: Requirement) -> ActionContext:
    """Enforce ``requirement`` for the current request; raise the first failing check's error.

    Errors are reported in this order: 403 ``banned`` (IP or principal) → 401 → 403
    ``forbidden`` → 429. Authentication and authorization are decided locally first; then ONE
    limiter call (one Redis round trip) checks the bans, counts every applicable limit and reads
    the principal's token deny-list keys. A request that fails authentication or authorization
    counts only toward its IP's limit.
    """
    req: Request = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup each
    ctx_g: _AppCtxGlobals = g._get_current_object()
    am: AppManager = current_app.extensions["keel"]
    limiter = am.limiter
    ip = request_ip(req, ctx_g, limiter.trusted_proxies)
    principal: Principal | None = None
    auth_error: HTTPError | None = None
    try:
        principal = auth.authenticate(req, ctx_g, am)
    except Unauthorized as exc:
        if requirement.auth != "public":  # a public endpoint ignores a bad credential
            auth_error = exc
    authz_error = authorize(principal, requirement) if auth_error is None else None
    keys = auth.revocation_keys(principal, am) if principal is not None and limiter.using_redis else None
    outcome = limits.check_request(
        limiter,
        ctx_g,
        ip,
        principal,
        requirement,
        identity_limits=auth_error is None and authz_error is None,
        revocation_keys=keys,
    )
    banned = limiter.banned_error(outcome)
    if banned is not None:
        raise banned
    if auth_error is not None:
        raise auth_error
    if principal is not None:
        served = _unless_revoked(principal, outcome.revocation_values if keys is not None else None, am, requirement)
        if served is not principal and served is not None and authz_error is None:
            # An API key whose owner changed since its record was cached: the owner's current
            # roles decide (a grant takes effect from the next request, a withdrawal now).
            authz_error = authorize(served, requirement)
        principal = served
    if authz_error is not None:
        raise authz_error
    limited = limiter.limited_error(outcome)
    if limited is not None:
        raise limited
    state = get_state(ctx_g)
    ctx = _context(principal, state.request_id, ip, requirement.name)
    state.identity = ctx.identity
    return ctx


def _unless_revoked(
    principal: Principal, values: list[Any] | None, am: AppManager, requirement: Requirement
) -> Principal | None:
    """The principal to serve when its credential is not revoked (``principal``, or its fresh
    version: see :func:`core.http.auth.check_revocation`); a public endpoint serves a revoked
    one as anonymous, any other raises :class:`Unauthorized`."""
    try:
        return auth.check_revocation(principal, values, am)
    except Unauthorized:
        if requirement.auth != "public":
            raise
        return None


def _context(principal: Principal | None, request_id: str, ip: str, name: str) -> ActionContext:
    """The handler's view of the caller: ``ctx.user`` for a user token, ``ctx.api_key`` for a key."""
    if principal is None:
        return ActionContext(request_id=request_id, client_ip=ip, action=name)
    if principal.kind == "user":
        user = {"id": int(principal.id), "username": principal.name, "roles": list(principal.roles)}
        return ActionContext(request_id=request_id, client_ip=ip, action=name, user=user, claims=principal.claims)
    api_key = {"id": principal.id, "name": principal.name, "scopes": list(principal.scopes)}
    return ActionContext(request_id=request_id, client_ip=ip, action=name, api_key=api_key)
