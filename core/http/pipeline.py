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

import logging
import time
from collections.abc import Callable

from flask import Flask, Request, Response, g, request
from flask.ctx import _AppCtxGlobals

from core.errors import PayloadTooLarge
from core.http import access_log
from core.http.state import ENVIRON_KEY, HEADER, RequestState, get_state, new_request_id

EXTENSION = "keel.pipeline"

BeforeStep = Callable[[Request, _AppCtxGlobals], Response | None]
AfterStep = Callable[[Request, _AppCtxGlobals, Response], None]

_perf_counter = time.perf_counter


class Pipeline:
    """The request steps of one app (one instance per app, in ``app.extensions``)."""

    def __init__(self, app: Flask) -> None:
        self._config = app.config  # the config, not the app: extensions keep no self.app
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
            access_log.log_request(req, state.started, response)
        response.headers[HEADER] = state.request_id
        return response


def pipeline(app: Flask) -> Pipeline:
    """The app's :class:`Pipeline` (installed by :func:`core.http.install`)."""
    found: Pipeline = app.extensions[EXTENSION]
    return found
