"""The client's IP address: the socket peer, or X-Forwarded-For behind trusted proxies."""

from __future__ import annotations

import ipaddress

from flask import Request, current_app, g, request


def client_ip(req: Request | None = None) -> str:
    """SPEC §7: ``X-Forwarded-For`` is used only with ``TRUSTED_PROXY_COUNT=n``, and then
    the n-th address from the right (the one our outermost trusted proxy saw). A malformed or
    too-short header falls back to the socket peer, so a client cannot choose its own IP."""
    req = req or request
    cached = g.get("keel_client_ip") if req is request else None
    if cached is not None:
        return str(cached)
    peer = req.remote_addr or "unknown"
    ip = peer
    trusted = int(current_app.extensions["keel"].settings["TRUSTED_PROXY_COUNT"])
    if trusted > 0:
        hops = [h.strip() for h in ",".join(req.headers.getlist("X-Forwarded-For")).split(",") if h.strip()]
        if len(hops) >= trusted:
            candidate = hops[-trusted]
            try:
                ip = str(ipaddress.ip_address(candidate))
            except ValueError:
                ip = peer
    if req is request:
        g.keel_client_ip = ip
    return ip
