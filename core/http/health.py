"""Liveness, readiness and health (SPEC §11). Exempt from limits and bans."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("keel_health", __name__)

EXEMPT_ENDPOINTS = frozenset({"keel_health.healthz", "keel_health.ready", "keel_metrics.metrics"})


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: 200 whenever the process serves."""
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready() -> Response:
    """200 when every required dependency answers; 503 with the failing checks otherwise."""
    am = current_app.extensions["keel"]
    report = am.health()
    failing: dict[str, Any] = {
        name: info for name, info in report["managers"].items() if info.get("status") == "unhealthy"
    }
    body: dict[str, Any] = {"status": "ready" if not failing else "not_ready", "failing": failing}
    response = jsonify(body)
    if failing:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return response


@bp.get("/health")
def health() -> Response:
    """Every manager and module: healthy, degraded (a fallback or a failed module) or unhealthy (503)."""
    am = current_app.extensions["keel"]
    report = am.health()
    response = jsonify(report)
    response.status_code = 503 if report["status"] == "unhealthy" else 200
    return response
