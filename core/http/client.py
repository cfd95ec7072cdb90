"""The client's IP address: the socket peer, or X-Forwarded-For behind trusted proxies."""

from __future__ import annotations

import ipaddress

from flask import Request, current_app
from flask.ctx import _AppCtxGlobals

from core.http.state import get_state


def request_ip(req: Request, ctx_g: _AppCtxGlobals, trusted: int | None = None) -> str:
    """The client IP of the current request, resolved once (``req``/``ctx_g``: the real
    ``request`` and ``g`` objects the pipeline's steps hold). SPEC §7: ``X-Forwarded-For`` is
    used only with ``TRUSTED_PROXY_COUNT=n``, and then the n-th address from the right (the
    one our outermost trusted proxy saw); a malformed or too-short header falls back to the
    socket peer, so a client cannot choose its own IP. ``trusted`` = ``TRUSTED_PROXY_COUNT``
    when the caller has it at hand."""
    state = get_state(ctx_g)
    if state.client_ip is not None:
        return state.client_ip
    if trusted is None:
        trusted = int(current_app.extensions["keel"].settings["TRUSTED_PROXY_COUNT"])
    ip = _resolve(req, trusted)
    state.client_ip = ip
    return ip


def _resolve(req: Request, trusted: int) -> str:
    peer = req.remote_addr or "unknown"
    if trusted <= 0:
        return peer
    ip = peer
    hops = [h.strip() for h in ",".join(req.headers.getlist("X-Forwarded-For")).split(",") if h.strip()]
    if len(hops) >= trusted:
        candidate = hops[-trusted]
        try:
            ip = str(ipaddress.ip_address(candidate))
        except ValueError:
            ip = peer
    return ip
