"""The client's IP address: the socket peer, or X-Forwarded-For behind trusted proxies."""

from __future__ import annotations

import ipaddress

from flask import Request, current_app, g, request
from flask.ctx import _AppCtxGlobals

from core.http.state import get_state


def client_ip(req: Request | None = None) -> str:
    """SPEC §7: ``X-Forwarded-For`` is used only with ``TRUSTED_PROXY_COUNT=n``, and then
    the n-th address from the right (the one our outermost trusted proxy saw). A malformed or
    too-short header falls back to the socket peer, so a client cannot choose its own IP.

    Without ``req``: the current request's, computed once and kept on ``g``."""
    if req is not None:
        return _resolve(req, int(current_app.extensions["keel"].settings["TRUSTED_PROXY_COUNT"]))
    return request_ip(request._get_current_object(), g._get_current_object())  # type: ignore[attr-defined]


def request_ip(req: Request, ctx_g: _AppCtxGlobals, trusted: int | None = None) -> str:
    """:func:`client_ip` of the current request given the real ``request`` and ``g`` objects
    (the pipeline's steps hold them); ``trusted`` = ``TRUSTED_PROXY_COUNT`` when the caller
    has it at hand."""
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
