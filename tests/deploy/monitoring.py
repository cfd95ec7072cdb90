"""The PromQL of deploy/prometheus/alerts.yml and deploy/grafana/keel.json, and the metric names
it uses (checked against a running app's /metrics by test_production_install.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.conftest import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "keel.json"

# Series Prometheus makes itself for every target: never in an app's /metrics.
SYNTHETIC = frozenset({"up"})
# Grafana's variables, replaced by values for promtool (which does not know them).
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": "keel", "$instance": ".*"}

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                       "offset", "inf", "nan"})


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: label matchers, ranges, grouping clauses,
    function calls, strings and keywords removed."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        if expr[match.end():].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(word)
    return names


def used_metric_names() -> dict[str, set[str]]:
    """``{metric name: {"alerts.yml", "keel.json"}}`` for every name the rules or dashboard use."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add("alerts.yml")
    for expr in dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, set()).add("keel.json")
    return used


def exported_names(metrics_text: str) -> set[str]:
    """Every sample name in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name for family in text_string_to_metric_families(metrics_text) for sample in family.samples}
