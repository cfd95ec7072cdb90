"""``/metrics`` and the request counter, the HTTP side of :mod:`core.metrics` (SPEC §11).

Under gunicorn ``PROMETHEUS_MULTIPROC_DIR`` is set (``deploy/gunicorn.conf.py`` does) and every
worker writes its values to that directory; ``/metrics`` then aggregates all workers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app
from flask.ctx import _AppCtxGlobals
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from core.http.pipeline import pipeline
from core.http.state import get_state
from core.metrics import ACTION_RELOAD_ERRORS, ACTION_RELOADS, BANS, DB_POOL_IN_USE, LATENCY, REQUESTS

bp = Blueprint("keel_metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics, in the text exposition format."""
    DB_POOL_IN_USE.set(current_app.extensions["keel"].db.pool_status().get("checked_out", 0))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, content_type=CONTENT_TYPE_LATEST)  # it names its charset already


def _count_ban(**data: Any) -> None:
    BANS.labels(str(data.get("kind", "unknown"))).inc()


def _count_reload(**data: Any) -> None:
    ACTION_RELOADS.inc()


def _count_reload_error(**data: Any) -> None:
    ACTION_RELOAD_ERRORS.inc()


class _RequestCounter:
    """The pipeline step counting every response (SPEC §11): ``keel_requests_total`` by action
    (or endpoint) and status, and the latency histogram. The label children are looked up once
    per (label, status) and kept (``labels()`` costs more than the increment itself)."""

    MAX_CHILDREN = 4096  # labels are endpoints/actions x statuses; a bound all the same

    def __init__(self) -> None:
        self._requests: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    def __call__(self, req: Request, ctx_g: _AppCtxGlobals, response: Response) -> None:
        endpoint = req.endpoint
        if endpoint == "keel_metrics.metrics":
            return
        state = get_state(ctx_g)
        label = state.action or endpoint or "unmatched"
        status = response.status_code
        child = self._requests.get((label, status))
        if child is None:
            child = REQUESTS.labels(label, str(status))
            if len(self._requests) < self.MAX_CHILDREN:
                self._requests[(label, status)] = child
        child.inc()
        started = state.started
        if started is not None:
            latency = self._latency.get(label)
            if latency is None:
                latency = LATENCY.labels(label)
                if len(self._latency) < self.MAX_CHILDREN:
                    self._latency[label] = latency
            latency.observe(time.perf_counter() - started)


def install(app: Flask) -> None:
    """Register ``/metrics``, request counting (a step of the request pipeline) and the hook
    listeners of this app.

    Request latency is measured from the request state's ``started``, set by the pipeline."""
    app.register_blueprint(bp)
    pipeline(app).add_after(_RequestCounter())

    hooks = app.extensions["keel"].hooks
    hooks.register("identity_banned", _count_ban)
    hooks.register("actions_reloaded", _count_reload)
    hooks.register("actions_reload_failed", _count_reload_error)
