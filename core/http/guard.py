"""The request guard: ban → authentication → authorization → rate limits (SPEC §4.4).

Every protected endpoint (each action, the auth routes, module routes) states what it needs as
a :class:`Requirement`; :func:`check` enforces it and returns the :class:`ActionContext`.

Seams (each filled by its own manager):
- authentication: ``core.http.auth.authenticate()`` decodes the JWT / API key locally (no
  Redis) into a :class:`Principal`;
- revocation, bans and every limit: ONE call to the limiter (one Redis round trip), which also
  reads the principal's revocation keys;
- authorization: roles / scopes, decided locally, *reported* after bans and authentication.
"""

from __future__ import annotations

from flask import Request, current_app, g, request
from flask.ctx import _AppCtxGlobals

from core.auth.identity import Principal, Requirement
from core.errors import HTTPError, Unauthorized
from core.http import auth, limits
from core.http.client import request_ip
from core.http.state import get_state
from core.module import ActionContext


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
    am = current_app.extensions["keel"]
    limiter = getattr(am, "limiter", None)
    ip = request_ip(req, ctx_g, limiter.trusted_proxies if limiter is not None else None)
    principal: Principal | None = None
    auth_error: HTTPError | None = None
    try:
        principal = auth.authenticate(req, ctx_g, am)
    except Unauthorized as exc:
        if requirement.auth != "public":  # a public endpoint ignores a bad credential
            auth_error = exc
    authz_error = auth.authorize(principal, requirement) if auth_error is None else None
    revocation_values = None
    if limiter is not None:
        keys = auth.revocation_keys(principal) if principal is not None and limiter.using_redis else None
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
        if keys is not None:
            revocation_values = outcome.revocation_values
    if auth_error is not None:
        raise auth_error
    if principal is not None:
        try:
            auth.check_revocation(principal, revocation_values)
        except Unauthorized:
            if requirement.auth != "public":
                raise
            principal = None  # a public endpoint serves a revoked credential as anonymous
    if authz_error is not None:
        raise authz_error
    if limiter is not None:
        limited = limiter.limited_error(outcome)
        if limited is not None:
            raise limited
    user, api_key = auth.context_identity(principal)
    state = get_state(ctx_g)
    ctx = ActionContext(request_id=state.request_id, client_ip=ip, action=requirement.name, user=user, api_key=api_key)
    state.identity = ctx.identity
    return ctx


