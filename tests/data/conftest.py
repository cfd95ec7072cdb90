"""Fixtures of the data tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(params=["in-process", "redis"])
def redis_app(request: pytest.FixtureRequest, make_app: Callable[..., Any]) -> Any:
    """An app on the real Redis, and one on the in-process stand-in (same interface)."""
    config = request.getfixturevalue("redis_config") if request.param == "redis" else {}
    return make_app(**config)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(request.getfixturevalue("pg_config")) if request.param == "postgresql" else {}
