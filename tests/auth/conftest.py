"""Fixtures of the auth tests: an app with probe routes guarded like actions, users, tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import jsonify

from core.auth.identity import Requirement
from core.http.guard import check

PASSWORD = "correct horse battery"


def add_probes(app: Any) -> None:
    """Routes guarded exactly like actions: admin-only, any identity, a scoped one, key-only."""

    def probe(req: Requirement) -> Callable[[], Any]:
        def view() -> Any:
            ctx = check(req)
            return jsonify({"success": True, "user": ctx.user, "api_key": ctx.api_key, "identity": ctx.identity})

        view.__name__ = f"probe_{req.name}"
        return view

    for path, req in {
        "/probe/admin": Requirement(auth="user", roles=("admin",), name="admin"),
        "/probe/any": Requirement(auth="any", name="any"),
        "/probe/editor": Requirement(auth="any", roles=("editor",), name="editor"),
        "/probe/scoped": Requirement(auth="any", scopes=("tasks:read", "tasks:write"), name="scoped"),
        "/probe/key": Requirement(auth="api_key", name="key"),
        "/probe/public": Requirement(auth="public", name="public"),
    }.items():
        app.add_url_rule(path, view_func=probe(req), methods=["GET", "POST"])


@pytest.fixture
def auth_app(make_app: Callable[..., Any]) -> Callable[..., Any]:
    """``auth_app(**overrides)``: a fresh app with the probe routes."""

    def factory(**overrides: Any) -> Any:
        # Tests here log in many times from one IP: the limiter's login limits and bans are
        # tested in test_login_attempts_reach_the_limiter, and relaxed everywhere else.
        app = make_app(**{"RATE_LIMIT_LOGIN": "1000/minute", "BAN_AFTER_VIOLATIONS": 1000, **overrides})
        add_probes(app)
        return app

    return factory


def create_user(app: Any, username: str, *, admin: bool = False, password: str = PASSWORD) -> Any:
    roles = ("admin", "user") if admin else ("user",)
    return app.extensions["keel"].jwt.users.create(username, password, roles=roles)


def login(client: Any, username: str, password: str = PASSWORD) -> dict[str, Any]:
    resp = client.post("/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(resp: Any) -> None:
    """The one generic 401 of SPEC §3."""
    assert resp.status_code == 401, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"] == "Authentication required or credentials invalid."
    assert body["error"]["details"] is None
    assert resp.headers["WWW-Authenticate"] == "Bearer"
