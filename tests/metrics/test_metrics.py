"""/metrics: Prometheus text that counts what happened."""

from __future__ import annotations

import re
from typing import Any


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_is_prometheus_text_and_counts_requests(client: Any) -> None:
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    client.get("/no-such-route")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Content-Type"].count("charset") == 1  # not "charset=utf-8" twice
    text = response.get_data(as_text=True)
    assert _sample(text, "keel_requests_total", action="keel_health.healthz", status="200") == 3
    assert _sample(text, "keel_requests_total", action="unmatched", status="404") == 1
    assert _sample(text, "keel_request_duration_seconds_count", action="keel_health.healthz") == 3
    assert "keel_request_duration_seconds_bucket" in text


def test_hooks_feed_ban_and_reload_counters(am: Any, client: Any) -> None:
    am.hooks.trigger("identity_banned", kind="ip", identifier="203.0.113.9", seconds=60)
    am.hooks.trigger("actions_reload_failed", path="actions/x.yaml", errors=["x"])
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "keel_bans_total", kind="ip") == 1
    assert _sample(text, "keel_actions_reload_errors_total") == 1


def test_rate_limit_rejections_are_exported_by_level(make_app: Any) -> None:
    app = make_app(RATE_LIMIT_IP="2/minute")
    client = app.test_client()
    statuses = [client.get("/actions/system_info").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    text = client.get("/metrics").get_data(as_text=True)  # /metrics itself is exempt from limits
    assert _sample(text, "keel_rate_limit_rejections_total", level="ip") == 2
