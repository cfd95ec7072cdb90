"""deploy/prometheus/alerts.yml and deploy/grafana/keel.json (issue 11 item 12): the rules pass
``promtool check rules`` and their unit tests, the dashboard's queries parse as PromQL, it shows
what operators look at, and the breaker state it plots is fed by every CircuitBreaker.
(That every metric they use exists in a running app's /metrics: test_production_install.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import monitoring
from tests.deploy.conftest import ensure_tool


@pytest.fixture(scope="module")
def promtool() -> str:
    return ensure_tool("promtool", "prometheus")


def _promtool(promtool: str, *args: str) -> str:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    out = _promtool(promtool, "check", "rules", str(monitoring.ALERTS))
    assert f"SUCCESS: {len(monitoring.alert_rules())} rules found" in out


def test_alert_rules_fire_on_their_unit_tests(promtool: str) -> None:
    out = _promtool(promtool, "test", "rules", str(monitoring.ALERT_TESTS))
    assert "SUCCESS" in out
    tested = {t["alertname"] for case in yaml.safe_load(monitoring.ALERT_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == {rule["alert"] for rule in monitoring.alert_rules()}  # every alert shown to fire


def test_the_alerts_cover_what_the_issue_lists() -> None:
    used = {name for rule in monitoring.alert_rules() for name in monitoring.metric_names(rule["expr"])}
    assert {"keel_requests_total", "keel_request_duration_seconds_bucket", "keel_breaker_open",
            "keel_vault_fallback_total", "keel_actions_reload_errors_total"} <= used
    for rule in monitoring.alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables replaced, as a recording rule for promtool."""
    rules = []
    for i, expr in enumerate(monitoring.dashboard_exprs()):
        for var, value in sorted(monitoring.GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"keel:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _promtool(promtool, "check", "rules", str(path))


def test_dashboard_shows_what_operators_need() -> None:
    dash = monitoring.dashboard()
    assert dash["uid"] == "keel" and dash["schemaVersion"] >= 36
    panels: list[dict[str, Any]] = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job", "instance"}
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    by_title = {p["title"]: {n for t in p["targets"] for n in monitoring.metric_names(t["expr"])} for p in panels}
    assert by_title["Request rate by action"] == {"keel_requests_total"}
    assert by_title["Error rate"] == {"keel_requests_total"}
    assert by_title["Latency percentiles"] == {"keel_request_duration_seconds_bucket"}
    assert by_title["Rate-limit rejections"] == {"keel_rate_limit_rejections_total"}
    assert by_title["Bans"] == {"keel_bans_total"}
    assert by_title["Database pool in use"] == {"keel_db_pool_in_use"}
    assert by_title["Circuit breakers"] == {"keel_breaker_open"}


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (job, le) (rate(keel_x_bucket{job="keel", le=~"1|2"}[5m]))', {"keel_x_bucket"}),
    ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval]))) > 1", {"a_bucket"}),
    ('up{job="keel"} == 0', {"up"}),
    ("sum(rate(a_total[5m])) / on (job) group_left sum(rate(b_total[5m])) and bool c", {"a_total", "b_total", "c"}),
])
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert monitoring.metric_names(expr) == names


def test_every_breaker_exports_its_state() -> None:
    from prometheus_client import generate_latest

    from core.breaker import CircuitBreaker

    def value() -> str:
        line = next(line for line in generate_latest().decode().splitlines()
                    if line.startswith('keel_breaker_open{dependency="deploy-test"}'))
        return line.rsplit(" ", 1)[1]

    clock = [0.0]
    breaker = CircuitBreaker("deploy-test", failures=(ConnectionError,), threshold=2, probe_interval=1,
                             clock=lambda: clock[0])
    assert value() == "0.0"
    breaker.failure(ConnectionError())
    assert value() == "0.0"  # below the threshold: still closed
    breaker.failure(ConnectionError())
    assert value() == "1.0"  # open
    clock[0] += 1
    assert breaker.allow()  # the probe (half-open): calls are still refused, still 1
    assert value() == "1.0"
    breaker.success()
    assert value() == "0.0"
