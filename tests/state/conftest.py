"""Fixtures of the state tests: every test runs on each storage stack."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

STACKS = ["sqlite", "sqlite+redis", "postgresql", "postgresql+redis"]
TEST_ORACLE_DSN = os.environ.get("TEST_ORACLE_DSN")  # oracle+oracledb://user:pass@host:1521/?service_name=...
if TEST_ORACLE_DSN:
    STACKS.append("oracle")


def stack_settings(request: pytest.FixtureRequest, stack: str) -> dict[str, Any]:
    """Settings for ``stack``: SQLite (per-test file) or the real PostgreSQL, with the real
    Redis or the in-process stand-in."""
    config: dict[str, Any] = {}
    if stack == "oracle":
        config["DATABASE_URL"] = request.getfixturevalue("oracle_url")
    if stack.startswith("postgresql"):
        config.update(request.getfixturevalue("pg_config"))
    if stack.endswith("+redis"):
        config.update(request.getfixturevalue("redis_config"))
    return config


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stack_config(request: pytest.FixtureRequest, stack: str) -> dict[str, Any]:
    return stack_settings(request, stack)


@pytest.fixture
def state_app(stack_config: dict[str, Any], make_app: Callable[..., Any]) -> Any:
    # stack_config first: its database is cleaned after the app is disposed
    return make_app(**stack_config)


@pytest.fixture
def sm(state_app: Any) -> Any:
    """The app's StateManager with the ``task``-like machine ``job`` defined."""
    state = state_app.extensions["keel"].state
    state.define("job", {"todo": ["doing"], "doing": ["todo", "done"], "done": []}, initial="todo")
    return state


@pytest.fixture
def oracle_url() -> Iterator[str]:
    """The Oracle integration database (only when TEST_ORACLE_DSN is set); state rows removed after."""
    assert TEST_ORACLE_DSN is not None
    yield TEST_ORACLE_DSN
    engine = sa.create_engine(TEST_ORACLE_DSN)
    with engine.begin() as conn:
        for table in ("task_comments", "tasks", "keel_state_history", "keel_state"):
            conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 - fixed table names
    engine.dispose()
