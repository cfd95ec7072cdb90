"""The one typed object a request's steps share, stored as ``g.keel`` (DESIGN habit 7).

The pipeline creates it first thing (:func:`begin`); every later step reads and writes its
fields instead of loose ``g`` attributes, so what a request carries is declared in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import g
from flask.ctx import _AppCtxGlobals

ATTR = "keel"


@dataclass(slots=True)
class RequestState:
    request_id: str
    started: float | None = None  # perf_counter() at the pipeline's first step
    action: str | None = None  # the action served (metrics label, access log)
    client_ip: str | None = None  # resolved once (socket peer or trusted X-Forwarded-For)
    principal: Any = None  # the authenticated caller (core.http.auth.Principal) or None
    auth_error: Exception | None = None  # authentication failed (raised again on a re-read)
    authenticated: bool = False  # principal/auth_error are set
    identity: str | None = None  # "user:42" | "api_key:…" | "ip:…" once the guard passed
    ip_limited: bool = False  # the IP limit was already counted for this request
    rate_states: list[Any] | None = None  # limiter TierStates for the rate-limit headers


def get_state(ctx_g: _AppCtxGlobals | None = None) -> RequestState:
    """The current request's state (created on first use when the pipeline did not run)."""
    if ctx_g is None:
        ctx_g = g._get_current_object()
    state: RequestState | None = ctx_g.__dict__.get(ATTR)
    if state is None:
        from flask import request

        from core.http.request_id import ENVIRON_KEY, new_request_id

        state = RequestState(new_request_id(request.environ.get(ENVIRON_KEY)))
        setattr(ctx_g, ATTR, state)
    return state
