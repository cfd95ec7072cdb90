"""Every request is logged once with its status, duration and request id."""

from __future__ import annotations

import logging
from typing import Any

import pytest


def test_one_access_line_per_request_with_status_duration_and_request_id(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="keel.access"):
        client.get("/healthz?token=should-not-be-logged", headers={"X-Request-ID": "req-abc.1"})
        client.get("/missing")
    lines = [r for r in caplog.records if r.name == "keel.access"]
    assert [r.getMessage() for r in lines] == ["GET /healthz 200", "GET /missing 404"]
    assert lines[0].request_id == "req-abc.1"  # type: ignore[attr-defined]
    assert lines[0].status == 200  # type: ignore[attr-defined]
    assert isinstance(lines[0].duration_ms, float)  # type: ignore[attr-defined]
    assert "should-not-be-logged" not in caplog.text
