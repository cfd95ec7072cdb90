"""Prometheus metrics (SPEC §11): the one process-wide registry Keel keeps.

Metrics are process-global by nature (prometheus_client's model), so they live here and only
here. Under gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` (``deploy/gunicorn.conf.py`` does) and
every worker writes its values to that directory; ``/metrics`` then aggregates all workers.

This module only declares them (the bottom layer); ``core/http/metrics.py`` serves
``/metrics`` and counts requests. Events are counted where they happen through hooks (bans,
reloads) and the request pipeline; gauges that belong to a manager (DB pool in use) are read
at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

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
# Set by every CircuitBreaker (core/breaker.py) when it is built and on each state change; under
# gunicorn the highest value of the live workers: 1 when any worker's circuit is open.
BREAKER_OPEN = Gauge(
    "keel_breaker_open",
    "1 while the dependency's circuit is open or probing (calls fail fast), 0 when closed",
    ["dependency"],
    multiprocess_mode="livemax",
)
ACTION_RELOADS = Counter("keel_actions_reloads_total", "Action files reloaded")
ACTION_RELOAD_ERRORS = Counter("keel_actions_reload_errors_total", "Action files rejected on reload")
WS_CONNECTIONS = Gauge("keel_ws_connections", "Open Socket.IO connections", multiprocess_mode="livesum")
WS_CONNECTS = Counter("keel_ws_connects_total", "Socket.IO connection attempts by outcome", ["outcome"])
WS_EVENTS = Counter("keel_ws_events_total", "Socket.IO client events by event and outcome", ["event", "outcome"])
WS_ROOM_MESSAGES = Counter("keel_ws_room_messages_total", "Room messages sent to a room")
WS_FORCED_DISCONNECTS = Counter(
    "keel_ws_forced_disconnects_total", "Connections dropped by the server (revocation, ban)", ["reason"]
)

ALL: tuple[MetricWrapperBase, ...] = (
    REQUESTS,
    LATENCY,
    RATE_LIMITED,
    BANS,
    DB_POOL_IN_USE,
    VAULT_FALLBACK,
    BREAKER_OPEN,
    ACTION_RELOADS,
    ACTION_RELOAD_ERRORS,
    WS_CONNECTIONS,
    WS_CONNECTS,
    WS_EVENTS,
    WS_ROOM_MESSAGES,
    WS_FORCED_DISCONNECTS,
)


def reset_metrics() -> None:
    """Zero every Keel metric of this process (the one global's reset, used by an autouse test
    fixture so that metric tests assert exact values)."""
    for metric in ALL:
        if metric._labelnames:
            metric.clear()
        else:
            metric._value.set(0)  # type: ignore[attr-defined]  # the unlabelled value holder
