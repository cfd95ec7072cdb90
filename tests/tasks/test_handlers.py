"""The tasks module's handlers, called directly through the module instance."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import IllegalTransition, NotFound, ValidationError, VersionConflict
from tests.tasks.conftest import make_ctx


def test_create_get_list(tasks: Any) -> None:
    ctx = make_ctx(user_id=3)
    task = tasks.create_task({"title": "Write spec", "priority": 2, "tags": ["doc"]}, ctx)
    assert ctx.status == 201
    assert task == {
        "id": task["id"],
        "title": "Write spec",
        "description": "",
        "priority": 2,
        "tags": ["doc"],
        "state": "todo",
        "version": 1,
        "created_by": "user:3",
        "updated_at": task["updated_at"],
    }
    assert tasks.get_task({"id": task["id"]}, make_ctx()) == task
    other = tasks.create_task({"title": "Second"}, make_ctx())
    tasks.transition_task({"id": other["id"], "to": "doing"}, make_ctx())
    listed = tasks.list_tasks({}, make_ctx())
    assert [t["id"] for t in listed["tasks"]] == [task["id"], other["id"]] and listed["total"] == 2
    doing = tasks.list_tasks({"state": "doing", "limit": 10, "offset": 0}, make_ctx())
    assert [t["id"] for t in doing["tasks"]] == [other["id"]] and doing["total"] == 1
    with pytest.raises(NotFound, match="task 999 not found"):
        tasks.get_task({"id": 999}, make_ctx())


def test_update_with_and_without_expected_version(tasks: Any) -> None:
    task = tasks.create_task({"title": "a"}, make_ctx())
    updated = tasks.update_task({"id": task["id"], "title": "b", "expected_version": 1}, make_ctx())
    assert (updated["title"], updated["version"]) == ("b", 2)
    with pytest.raises(VersionConflict) as info:
        tasks.update_task({"id": task["id"], "priority": 5, "expected_version": 1}, make_ctx())
    assert info.value.status == 409 and info.value.code == "conflict"
    assert tasks.update_task({"id": task["id"], "priority": 5}, make_ctx())["priority"] == 5
    with pytest.raises(ValidationError):
        tasks.update_task({"id": task["id"]}, make_ctx())


def test_state_machine_and_history(tasks: Any) -> None:
    task = tasks.create_task({"title": "flow"}, make_ctx(user_id=1))
    tid = task["id"]
    with pytest.raises(IllegalTransition) as info:
        tasks.transition_task({"id": tid, "to": "done"}, make_ctx())  # todo -> done skips doing
    assert info.value.status == 409 and info.value.code == "conflict"
    tasks.transition_task({"id": tid, "to": "doing"}, make_ctx(user_id=2))
    tasks.transition_task({"id": tid, "to": "todo"}, make_ctx(user_id=1))  # doing -> todo allowed
    tasks.transition_task({"id": tid, "to": "doing", "expected_version": 3}, make_ctx(user_id=2))
    with pytest.raises(VersionConflict):
        tasks.transition_task({"id": tid, "to": "done", "expected_version": 3}, make_ctx())
    done = tasks.transition_task({"id": tid, "to": "done"}, make_ctx(user_id=2))
    assert (done["state"], done["version"]) == ("done", 5)
    with pytest.raises(IllegalTransition):
        tasks.transition_task({"id": tid, "to": "todo"}, make_ctx())  # done is final
    with pytest.raises(IllegalTransition):
        tasks.transition_task({"id": tid, "to": "archived"}, make_ctx())
    history = tasks.task_history({"id": tid}, make_ctx())
    assert [(h["from"], h["to"], h["actor"]) for h in history] == [
        (None, "todo", "user:1"),
        ("todo", "doing", "user:2"),
        ("doing", "todo", "user:1"),
        ("todo", "doing", "user:2"),
        ("doing", "done", "user:2"),
    ]
    assert all(set(h) >= {"from", "to", "actor", "at"} for h in history)
    with pytest.raises(NotFound):
        tasks.task_history({"id": 4242}, make_ctx())


def test_comments_in_sql(tasks: Any, tasks_app: Any) -> None:
    task = tasks.create_task({"title": "c"}, make_ctx())
    ctx = make_ctx(api_key="k1", user_id=None)
    comment = tasks.comment_task({"id": task["id"], "text": "first"}, ctx)
    assert ctx.status == 201 and comment["author"] == "api_key:k1" and isinstance(comment["id"], int)
    tasks.comment_task({"id": task["id"], "text": "second"}, make_ctx())
    listed = tasks.list_comments({"id": task["id"]}, make_ctx())
    assert listed["storage"] == "sql" and [c["text"] for c in listed["comments"]] == ["first", "second"]
    with tasks_app.extensions["keel"].db.sql.connect() as conn:
        import sqlalchemy as sa

        assert conn.execute(sa.text("SELECT count(*) FROM task_comments")).scalar() == 2
    with pytest.raises(NotFound):
        tasks.comment_task({"id": 999, "text": "x"}, make_ctx())


def test_comments_in_mongodb_when_configured(make_app: Callable[..., Any], mongo_config: dict[str, Any]) -> None:
    app = make_app(**mongo_config)
    am = app.extensions["keel"]
    tasks = am.modules.get("tasks")
    task = tasks.create_task({"title": "m"}, make_ctx())
    comment = tasks.comment_task({"id": task["id"], "text": "in mongo"}, make_ctx())
    assert isinstance(comment["id"], str)  # an ObjectId
    assert am.db.mongo["task_comments"].count_documents({"task_id": task["id"]}) == 1
    listed = tasks.list_comments({"id": task["id"]}, make_ctx())
    assert listed["storage"] == "mongodb" and listed["comments"][0]["text"] == "in mongo"
    report = app.test_client().get("/health").get_json()["managers"]["db"]["mongo"]
    assert report["status"] == "healthy"


def test_mongodb_down_is_a_503_and_degraded_health(make_app: Callable[..., Any]) -> None:
    """Real pymongo against a port where nothing listens: the timeouts and breaker hold."""
    from core.errors import ServiceUnavailable
    from tests.conftest import free_port

    app = make_app(MONGODB_URL=f"mongodb://127.0.0.1:{free_port()}/keel", MONGODB_TIMEOUT=0.2)
    tasks = app.extensions["keel"].modules.get("tasks")
    task = tasks.create_task({"title": "m"}, make_ctx())
    with pytest.raises(ServiceUnavailable):
        tasks.comment_task({"id": task["id"], "text": "lost?"}, make_ctx())
    report = app.test_client().get("/health").get_json()
    assert report["managers"]["db"]["mongo"]["status"] == "unhealthy"
    assert report["managers"]["db"]["status"] == "degraded"


def test_changes_are_broadcast_to_the_tasks_room(tasks_app: Any, tasks: Any, request: pytest.FixtureRequest) -> None:
    """Every change reaches the members of the Socket.IO room ``tasks``: delivered to a member
    in process, or published on the Socket.IO message queue (Redis) that every instance reads."""
    am = tasks_app.extensions["keel"]
    if am.redis.client is None:
        user = am.jwt.users.create("watcher", "correct horse battery")
        token = am.jwt.issue_pair(user)["access_token"]
        member = am.websocket.socketio.test_client(tasks_app, auth={"token": token})
        assert member.emit("join_room", {"room": "tasks"}, callback=True)["ok"]
        task = tasks.create_task({"title": "live"}, make_ctx())
        tasks.transition_task({"id": task["id"], "to": "doing"}, make_ctx(user_id=7))
        sent = [(m["name"], m["args"][0]) for m in member.get_received() if m["name"] == "task_changed"]
        member.disconnect()
    else:
        import json

        import redis

        channel = am.settings["REDIS_KEY_PREFIX"] + "socketio"
        listener = redis.Redis.from_url(am.settings["REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
        listener.subscribe(channel)
        task = tasks.create_task({"title": "live"}, make_ctx())
        tasks.transition_task({"id": task["id"], "to": "doing"}, make_ctx(user_id=7))
        sent = []
        deadline = time.monotonic() + 5
        while len(sent) < 2 and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.2)
            if message is not None:
                body = json.loads(message["data"])
                assert body["method"] == "emit" and body["room"] == "tasks"
                sent.append((body["event"], body["data"][0]))
        listener.close()
    assert [(event, data["change"]) for event, data in sent] == [
        ("task_changed", "created"),
        ("task_changed", "transition"),
    ]
    assert sent[1][1]["task"]["state"] == "doing" and sent[1][1]["actor"] == "user:7"
