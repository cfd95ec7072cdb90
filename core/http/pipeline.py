"""The per-request pipeline: ONE ``before_request`` and ONE ``after_request`` for the framework.

Flask pays a fixed cost for every hook it calls (``ensure_sync``, an ``inspect`` look-up) and
every ``request``/``g`` access goes through a context-variable proxy. Keel's request steps —
request id, timer, body-size refusal, the limiter's route protection, its rate-limit headers,
the metrics, the access log, the ``X-Request-ID`` echo — therefore run from one hook pair that
resolves ``request`` and ``g`` once and passes them down (DESIGN habit 9; ``bench/`` measures it).

Order (the same as when each part had its own hook):
- before: request id → timer → 413 on a declared oversize body → the registered steps (the
  limiter's ban check and IP limit for non-action routes) in registration order;
- after: the registered steps (rate-limit headers, then the metrics) in registration order →
  access log → ``X-Request-ID``.

Managers contribute through :meth:`Pipeline.add_before` / :meth:`Pipeline.add_after` (reach the
pipeline with :func:`pipeline`), never through ``app.before_request``/``app.after_request``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, g, request
from flask.ctx import _AppCtxGlobals
from werkzeug.sansio.utils import host_is_trusted

from core.errors import BadRequest, PayloadTooLarge
from core.http import access_log
from core.http.health import EXEMPT_ENDPOINTS
from core.http.state import ENVIRON_KEY, HEADER, RequestState, add_headers, get_state, new_request_id

EXTENSION = "keel.pipeline"

BeforeStep = Callable[[Request, _AppCtxGlobals], Response | None]
AfterStep = Callable[[Request, _AppCtxGlobals, Response], None]

_perf_counter = time.perf_counter


class Pipeline:
    """The request steps of one app (one instance per app, in ``app.extensions``)."""

    def __init__(self, app: Flask, hsts_seconds: int = 0, trusted_hosts: list[str] | None = None) -> None:
        self._config = app.config  # the config, not the app: extensions keep no self.app
        self._hsts = f"max-age={hsts_seconds}; includeSubDomains" if hsts_seconds else None
        self._trusted_hosts = list(trusted_hosts or ()) or None  # None: any Host (refused in production)
        self.before: list[BeforeStep] = []
        self.after: list[AfterStep] = []
        app.extensions[EXTENSION] = self
        app.before_request(self._before)
        app.after_request(self._after)

    def add_before(self, step: BeforeStep) -> None:
        """Run ``step(request, g)`` before every request, after the built-in steps; it may raise
        a :mod:`core.errors` HTTP error, or return a response, to answer instead of the view
        (the after steps still run)."""
        self.before.append(step)

    def add_after(self, step: AfterStep) -> None:
        """Run ``step(request, g, response)`` on every response (it edits ``response`` in place),
        before the access log and the request id header."""
        self.after.append(step)

    def _before(self) -> Response | None:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        ctx_g: _AppCtxGlobals = g._get_current_object()
        environ = req.environ
        ctx_g.keel = RequestState(new_request_id(environ.get(ENVIRON_KEY)), _perf_counter())
        # Werkzeug enforces MAX_CONTENT_LENGTH only when a view reads the body; refuse a
        # declared oversize body up front so every route answers 413 the same way.
        if environ.get("CONTENT_LENGTH"):
            limit = self._config.get("MAX_CONTENT_LENGTH")
            length = req.content_length
            if limit is not None and length is not None and length > limit:
                raise PayloadTooLarge()
        elif "HTTP_TRANSFER_ENCODING" in environ:
            _buffer_streamed_body(environ, self._config.get("MAX_CONTENT_LENGTH"))
        if self._trusted_hosts is not None:
            _check_host(req, self._trusted_hosts)
        for step in self.before:
            answer = step(req, ctx_g)
            if answer is not None:
                return answer
        return None

    def _after(self, response: Response) -> Response:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        ctx_g: _AppCtxGlobals = g._get_current_object()
        for step in self.after:
            step(req, ctx_g, response)
        state = get_state(ctx_g)  # created here when the before step did not run
        if access_log.logger.isEnabledFor(logging.INFO):
            access_log.log_request(req, state.started, response, state)
        headers = response.headers
        headers[HEADER] = state.request_id
        # Security headers (SPEC §3), set here once for every response. add(): nothing else sets them.
        add_headers(headers, _SECURITY_HEADERS)
        if state.no_store:  # the body carries a secret (tokens, a new API key)
            headers["Cache-Control"] = "no-store"
            headers.add("Pragma", "no-cache")
        if response.mimetype == "text/html":
            headers.setdefault("Content-Security-Policy", HTML_CSP)
        if self._hsts is not None:
            headers.add("Strict-Transport-Security", self._hsts)
        return response


# HTML pages (/docs, /admin) load only this origin's scripts, styles and images, and may not be
# framed. Swagger UI sets inline style attributes and uses data: images, hence those two.
# Security headers (SPEC §3) every response carries, in the order they are added.
_SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))

HTML_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _check_host(req: Request, trusted: list[str]) -> None:
    """400 for a Host header outside ``TRUSTED_HOSTS`` (Werkzeug's matching: ``.example.com``
    also allows subdomains), except on the probes. Never echoes the Host."""
    rule = req.url_rule
    if rule is not None and rule.endpoint in EXEMPT_ENDPOINTS:
        return
    if not host_is_trusted(req.environ.get("HTTP_HOST") or req.environ.get("SERVER_NAME"), trusted):
        raise BadRequest("The Host header names a host this server does not serve.")


def _buffer_streamed_body(environ: dict[str, Any], limit: int | None) -> None:
    """A body sent without Content-Length (``Transfer-Encoding: chunked``) is read here, up to
    ``limit`` + 1 bytes: over the limit it is a 413 — Werkzeug would hand the view the first
    ``limit`` bytes and drop the rest silently — otherwise the rest of the app sees an ordinary
    body with a Content-Length. Only such requests pay for this."""
    stream = environ["wsgi.input"]
    cap = (limit if limit is not None else 1 << 62) + 1
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = stream.read(min(65536, cap - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if limit is not None and size > limit:
        raise PayloadTooLarge()
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ.pop("wsgi.input_terminated", None)


def pipeline(app: Flask) -> Pipeline:
    """The app's :class:`Pipeline` (installed by :func:`core.http.install`)."""
    found: Pipeline = app.extensions[EXTENSION]
    return found
