"""Prometheus metrics (SPEC §11): the one process-wide registry Keel keeps.

Metrics are process-global by nature (prometheus_client's model), so they live here and only
here. Under gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` (``deploy/gunicorn.conf.py`` does) and
every worker writes its values to that directory; ``/metrics`` then aggregates all workers.

Events are counted where they happen through hooks (bans, reloads) and the request pipeline;
gauges that belong to a manager (DB pool in use) are read at scrape time.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app
from flask.ctx import _AppCtxGlobals
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from core.http.pipeline import pipeline
from core.http.state import get_state

REQUESTS = Counter("keel_requests_total", "HTTP requests", ["action", "status"])
LATENCY = Histogram(
    "keel_request_duration_seconds",
    "HTTP request latency",
    ["action"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RATE_LIMITED = Counter("keel_rate_limit_rejections_total", "Requests rejected by a rate limit", ["level"])
BANS = Counter("keel_bans_total", "Identities banned", ["kind"])
DB_POOL_IN_USE = Gauge("keel_db_pool_in_use", "Database connections checked out", multiprocess_mode="livesum")
VAULT_FALLBACK = Counter("keel_vault_fallback_total", "Secret reads served from cache or a fallback source")
ACTION_RELOADS = Counter("keel_actions_reloads_total", "Action files reloaded")
ACTION_RELOAD_ERRORS = Counter("keel_actions_reload_errors_total", "Action files rejected on reload")

bp = Blueprint("keel_metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    am = current_app.extensions["keel"]
    db = getattr(am, "db", None)
    pool = getattr(getattr(db, "sql", None), "pool", None)
    checked_out = getattr(pool, "checkedout", None)
    if callable(checked_out):
        DB_POOL_IN_USE.set(checked_out())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


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
