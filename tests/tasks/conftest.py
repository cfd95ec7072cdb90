"""Fixtures of the tasks tests: storage stacks, MongoDB, a caller context."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.module import ActionContext

TEST_MONGODB_URL = os.environ.get("TEST_MONGODB_URL")


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def stack_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    return {**request.getfixturevalue("pg_config"), **request.getfixturevalue("redis_config")}


@pytest.fixture
def mongo_config() -> Iterator[dict[str, Any]]:
    """A real MongoDB when TEST_MONGODB_URL is set; otherwise mongomock patched in place of
    pymongo.MongoClient (a mock: no MongoDB server can run on this machine)."""
    name = f"keeltest_{uuid.uuid4().hex[:10]}"
    if TEST_MONGODB_URL:
        import pymongo

        base = TEST_MONGODB_URL.rstrip("/")
        yield {"MONGODB_URL": f"{base}/{name}"}
        client: Any = pymongo.MongoClient(TEST_MONGODB_URL)
        client.drop_database(name)
        client.close()
        return
    import mongomock

    with mongomock.patch(servers=(("localhost", 27017),)):
        yield {"MONGODB_URL": f"mongodb://localhost:27017/{name}"}


@pytest.fixture
def tasks_app(stack_config: dict[str, Any], make_app: Callable[..., Any]) -> Any:
    # stack_config first: its database is cleaned after the app is disposed
    return make_app(**stack_config)


@pytest.fixture
def tasks(tasks_app: Any) -> Any:
    """The running tasks module instance (handlers are called directly)."""
    module = tasks_app.extensions["keel"].modules.get("tasks")
    assert module is not None and tasks_app.extensions["keel"].modules.state("tasks") == "started"
    return module


def make_ctx(user_id: int | None = 1, api_key: str | None = None) -> ActionContext:
    return ActionContext(
        request_id="test",
        client_ip="127.0.0.1",
        user={"id": user_id, "username": f"u{user_id}", "roles": ["user"]} if user_id is not None else None,
        api_key={"id": api_key, "name": "k", "scopes": ["tasks:read"]} if api_key else None,
    )
