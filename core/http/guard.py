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

from dataclasses import dataclass, field
from typing import Any

from flask import g, request

from core.errors import Unauthorized
from core.http.client import client_ip
from core.http.request_id import current_request_id
from core.module import ActionContext


@dataclass(frozen=True)
class Requirement:
    """What an endpoint asks of its caller."""

    auth: str = "any"  # public | user | api_key | any
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    rate_limit: str | None = None  # extra per-identity limit, "10/minute;100/hour"
    name: str = ""  # the action (or endpoint) name, for per-action limits and logs


@dataclass
class Principal:
    """An authenticated caller: a user (from a JWT) or an API key."""

    kind: str  # "user" | "api_key"
    id: str
    name: str
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)


def check(req: Requirement) -> ActionContext:
    """Enforce ``req`` for the current request; raise the first failing check's error."""
    ip = client_ip()
    has_credentials = bool(request.headers.get("Authorization") or request.headers.get("X-API-Key"))
    if req.auth != "public" and not has_credentials:
        raise Unauthorized()
    if has_credentials and req.auth != "public":
        # Authentication is not built yet: any credential is invalid until it is.
        raise Unauthorized()
    ctx = ActionContext(request_id=current_request_id(), client_ip=ip, action=req.name)
    g.keel_identity = ctx.identity
    return ctx
