"""The tasks actions through HTTP (``/actions/<name>``): YAML auth, roles, scopes, limits, 409s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

PASSWORD = "correct horse battery"


@pytest.fixture
def http(stack_config: dict[str, Any], make_app: Callable[..., Any]) -> Any:
    app = make_app(**stack_config)
    am = app.extensions["keel"]
    am.jwt.users.create("ada", PASSWORD, roles=("user",))
    am.jwt.users.create("guest", PASSWORD, roles=("viewer",))
    return app


def _token(client: Any, username: str) -> dict[str, str]:
    response = client.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def test_task_lifecycle_over_http(http: Any) -> None:
    client = http.test_client()
    auth = _token(client, "ada")
    created = client.post("/actions/create_task", json={"title": "Write spec", "tags": ["doc"]}, headers=auth)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["success"] is True and body["action"] == "create_task"
    task = body["result"]
    assert (task["state"], task["version"], task["priority"], task["created_by"]) == ("todo", 1, 3, task["created_by"])
    tid = task["id"]

    got = client.get(f"/actions/get_task?id={tid}", headers=auth)  # query string "1" -> 1
    assert got.status_code == 200 and got.get_json()["result"] == task

    moved = client.post(
        "/actions/transition_task", json={"id": tid, "to": "doing", "expected_version": 1}, headers=auth
    )
    assert moved.status_code == 200 and moved.get_json()["result"]["state"] == "doing"

    stale = client.post("/actions/update_task", json={"id": tid, "title": "x", "expected_version": 1}, headers=auth)
    assert stale.status_code == 409 and stale.get_json()["error"]["code"] == "conflict"
    illegal = client.post("/actions/transition_task", json={"id": tid, "to": "doing"}, headers=auth)
    assert illegal.status_code == 409 and illegal.get_json()["error"]["details"]["from"] == "doing"

    comment = client.post("/actions/comment_task", json={"id": tid, "text": "on it"}, headers=auth)
    assert comment.status_code == 201
    history = client.get(f"/actions/task_history?id={tid}", headers=auth).get_json()["result"]
    assert [(h["from"], h["to"]) for h in history] == [(None, "todo"), ("todo", "doing")]
    listed = client.get("/actions/list_tasks?state=doing", headers=auth).get_json()["result"]
    assert [t["id"] for t in listed["tasks"]] == [tid]

    missing = client.get("/actions/get_task?id=999", headers=auth)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    invalid = client.post("/actions/create_task", json={"title": "", "priority": 9}, headers=auth)
    assert invalid.status_code == 400
    assert {d["param"] for d in invalid.get_json()["error"]["details"]} == {"title", "priority"}


def test_yaml_auth_roles_and_scopes_apply(http: Any) -> None:
    client = http.test_client()
    assert client.get("/actions/list_tasks").status_code == 401
    guest = _token(client, "guest")  # a user without the role "user"
    assert client.get("/actions/list_tasks", headers=guest).status_code == 403

    ada = _token(client, "ada")
    made = client.post("/auth/api-keys", json={"name": "reader", "scopes": ["tasks:read"]}, headers=ada)
    assert made.status_code == 201, made.get_json()
    key = {"X-API-Key": made.get_json()["key"]}
    assert client.get("/actions/list_tasks", headers=key).status_code == 200
    denied = client.post("/actions/create_task", json={"title": "no"}, headers=key)
    assert denied.status_code == 403 and denied.get_json()["error"]["code"] == "forbidden"


def test_create_task_rate_limit_from_yaml(make_app: Callable[..., Any]) -> None:
    app = make_app(BAN_AFTER_VIOLATIONS=1000)
    app.extensions["keel"].jwt.users.create("ada", PASSWORD, roles=("user",))
    client = app.test_client()
    auth = _token(client, "ada")
    statuses = [
        client.post("/actions/create_task", json={"title": f"t{i}"}, headers=auth).status_code for i in range(31)
    ]
    assert statuses[:30] == [201] * 30 and statuses[30] == 429  # rate_limit: "30/minute"
