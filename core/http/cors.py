"""CORS for browser clients (SPEC §2 ``CORS_ORIGINS``; default: same origin only).

An ``Origin`` listed in ``CORS_ORIGINS`` (or ``*``, refused in production) gets
``Access-Control-Allow-Origin`` on every response, with the headers a client needs to read
(request id, rate-limit state) exposed. Its preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered 204 before authentication and rate limits, as
browsers send it without credentials. Other origins get no CORS header: the browser blocks
them. Credentials travel in headers (``Authorization``, ``X-API-Key``), never cookies, so
``Access-Control-Allow-Credentials`` is not sent.
"""

from __future__ import annotations

from flask import Request, Response
from flask.ctx import _AppCtxGlobals

from core.http.pipeline import Pipeline

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID"
EXPOSE_HEADERS = (
    "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, RateLimit, RateLimit-Policy, "
    "Retry-After, WWW-Authenticate"
)
MAX_AGE = "600"


class Cors:
    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    def allowed(self, origin: str | None) -> str | None:
        """The value for Access-Control-Allow-Origin, or None."""
        if not origin:
            return None
        if self.any:
            return "*"
        return origin if origin in self.origins else None

    def preflight(self, req: Request, ctx_g: _AppCtxGlobals) -> Response | None:
        if req.method != "OPTIONS" or "HTTP_ACCESS_CONTROL_REQUEST_METHOD" not in req.environ:
            return None
        allow = self.allowed(req.environ.get("HTTP_ORIGIN"))
        if allow is None:
            return None  # not ours to allow: the request goes on and gets no CORS headers
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = MAX_AGE
        return response

    def headers(self, req: Request, ctx_g: _AppCtxGlobals, response: Response) -> None:
        allow = self.allowed(req.environ.get("HTTP_ORIGIN"))
        if allow is None:
            return
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if allow != "*":
            response.vary.add("Origin")


def install(pipeline: Pipeline, origins: list[str]) -> None:
    """Add CORS to the pipeline when origins are configured (nothing per request otherwise)."""
    if not origins:
        return
    cors = Cors(origins)
    pipeline.add_before(cors.preflight)
    pipeline.add_after(cors.headers)
