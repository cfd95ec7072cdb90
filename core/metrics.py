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

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("keel_requests_total", "HTTP requests", ["action", "status"])
LATENCY = Histogram(
    "keel_request_duration_seconds",
    "HTTP request latency",
    ["action"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RATE_LIMITED = Counter("keel_rate_limit_rejections_total", "Requests rejected by a rate limit", ["level"])
BANS = Counter("keel_bans_total", "Identities banned", ["kind"])
WS_CONNECTIONS = Gauge("keel_websocket_connections", "Open Socket.IO connections", multiprocess_mode="livesum")
WS_MESSAGES = Counter("keel_websocket_messages_total", "Socket.IO messages received", ["event"])
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


def install(app: Flask) -> None:
    """Register ``/metrics``, request counting and the hook listeners of this app.

    Request latency is measured from ``g.keel_started``, set by the access log."""
    app.register_blueprint(bp)

    @app.after_request
    def _count(response: Response) -> Response:
        if request.endpoint != "keel_metrics.metrics":
            label = g.get("keel_action") or request.endpoint or "unmatched"
            REQUESTS.labels(label, str(response.status_code)).inc()
            started = g.get("keel_started")
            if started is not None:
                LATENCY.labels(label).observe(time.perf_counter() - started)
        return response

    hooks = app.extensions["keel"].hooks
    hooks.register("identity_banned", _count_ban)
    hooks.register("actions_reloaded", _count_reload)
    hooks.register("actions_reload_failed", _count_reload_error)
