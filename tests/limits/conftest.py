"""Fixtures of the rate-limit tests: an app with routes guarded like actions, real users/keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import jsonify
from prometheus_client import REGISTRY

PASSWORD = "correct horse battery"


ACTIONS_YAML = """\
version: 1
module: system
actions:
  t_public: {{handler: info, auth: public, methods: [GET, POST]}}
  t_any: {{handler: info, auth: any, methods: [GET, POST]}}
  t_limited: {{handler: info, auth: any, methods: [GET, POST], rate_limit: "{limit}"}}
  t_open_limited: {{handler: info, auth: public, methods: [GET, POST], rate_limit: "{limit}"}}
  t_admin: {{handler: info, auth: user, roles: [admin], methods: [GET, POST]}}
"""


@pytest.fixture
def limits_app(make_app: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    """``limits_app(action_limit="5/minute", **settings)``: a fresh app whose actions are
    ``/actions/t_public`` (public), ``t_any`` (user or key), ``t_limited`` / ``t_open_limited``
    (their own per-identity limit ``action_limit``), ``t_admin`` (role admin) — real actions
    through the real dispatcher — plus ``/t/plain``, a non-action route."""

    def factory(action_limit: str = "5/minute", **overrides: Any) -> Any:
        actions = tmp_path / "limits_actions"
        actions.mkdir(exist_ok=True)
        (actions / "t.yaml").write_text(ACTIONS_YAML.format(limit=action_limit))
        overrides.setdefault("LOG_LEVEL", "WARNING")
        overrides.setdefault("ACTIONS_DIR", str(actions))
        app = make_app(**overrides)
        app.add_url_rule("/t/plain", view_func=lambda: jsonify({"ok": True}), endpoint="t_plain")
        return app

    return factory


def user_token(app: Any, username: str, *, admin: bool = False) -> str:
    """A real access token of a new user."""
    am = app.extensions["keel"]
    roles = ("admin", "user") if admin else ("user",)
    user = am.jwt.users.create(username, PASSWORD, roles=roles)
    return str(am.jwt.issue_pair(user)["access_token"])


def api_key(app: Any, name: str = "k") -> str:
    """A real API key (no owner)."""
    return str(app.extensions["keel"].api_keys.create(name, ["tasks:read"], owner_id=None)["key"])


def owned_key(app: Any, username: str) -> str:
    """A real API key of a new user."""
    am = app.extensions["keel"]
    user = am.jwt.users.create(username, PASSWORD)
    return str(am.api_keys.create("k", ["tasks:read"], owner_id=user.id)["key"])


def from_ip(ip: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": ip}}


def counts(name: str) -> dict[str, float]:
    """The samples of the Prometheus counter ``name`` by label value(s) — exact: an autouse
    fixture zeroes Keel's metrics before every test."""
    return {
        "/".join(sample.labels.values()): sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    }
