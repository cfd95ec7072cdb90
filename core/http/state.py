"""The request id and the one typed object a request's steps share (``g.keel``).

X-Request-ID (SPEC §3): a valid incoming one (≤ 128 chars of ``[A-Za-z0-9._-]``) is echoed,
otherwise one is generated. The pipeline creates the :class:`RequestState` first thing; every
later step reads and writes its fields instead of loose ``g`` attributes, so what a request
carries is declared in one place (DESIGN habit 7).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from flask import g, request
from flask.ctx import _AppCtxGlobals
from werkzeug.datastructures import Headers

HEADER = "X-Request-ID"
ENVIRON_KEY = "HTTP_X_REQUEST_ID"  # what request.headers[HEADER] reads
ATTR = "keel"
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_urandom = os.urandom


def new_request_id(incoming: str | None) -> str:
    """``incoming`` (the client's ``X-Request-ID``) when valid, otherwise 32 random hex digits
    (as random as a UUID4's, without building a UUID object)."""
    if incoming and _VALID.fullmatch(incoming):
        return incoming
    return _urandom(16).hex()


@dataclass(slots=True)
class RequestState:
    request_id: str
    started: float | None = None  # perf_counter() at the pipeline's first step
    action: str | None = None  # the action served (metrics label, access log)
    client_ip: str | None = None  # resolved once (socket peer or trusted X-Forwarded-For)
    principal: Any = None  # the authenticated caller (core.auth.identity.Principal) or None
    auth_error: Exception | None = None  # authentication failed (raised again on a re-read)
    authenticated: bool = False  # principal/auth_error are set
    identity: str | None = None  # "user:42" | "api_key:…" | "ip:…" once the guard passed
    ip_limited: bool = False  # the IP limit was already counted for this request
    rate_states: list[Any] | None = None  # limiter TierStates for the rate-limit headers
    no_store: bool = False  # the response carries a secret: Cache-Control: no-store


def get_state(ctx_g: _AppCtxGlobals | None = None) -> RequestState:
    """The current request's state (created on first use when the pipeline did not run)."""
    if ctx_g is None:
        ctx_g = g._get_current_object()
    state: RequestState | None = ctx_g.__dict__.get(ATTR)
    if state is None:
        state = RequestState(new_request_id(request.environ.get(ENVIRON_KEY)))
        setattr(ctx_g, ATTR, state)
    return state


def current_request_id() -> str:
    return get_state().request_id


def add_headers(headers: Headers, items: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> None:
    """``headers.add(name, value)`` for each item, for values Keel made (constants, numbers, text
    checked once): appended as the ``(name, value)`` tuples ``add`` appends, without its
    per-value newline check. Another ``Headers`` class (a subclass): its own ``add``."""
    if type(headers) is Headers:
        headers._list.extend(items)
    else:
        for name, value in items:
            headers.add(name, value)
