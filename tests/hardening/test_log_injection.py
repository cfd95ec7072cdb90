"""Hardening (issue 12) item 10: no forged lines in text logs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.logs import TextFormatter


def test_item_10_text_logs_escape_control_characters(make_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(LOG_FORMAT="text", LOG_LEVEL="INFO")
    client = app.test_client()
    capsys.readouterr()
    forged = "/x%0aFORGED%20INFO%20keel.audit:%20login%20ok%0d%00%1b[31m"
    assert client.get(forged).status_code == 404
    assert client.get("/healthz", headers={"X-Request-ID": "ok-1"}).status_code == 200
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert not any(line.startswith("FORGED") for line in lines), out
    assert "\x00" not in out and "\x1b" not in out and "\r" not in out
    access = [line for line in lines if "keel.access" in line]
    assert len(access) == 2, out  # one line per request, whatever the path holds
    assert "/x\\nFORGED INFO keel.audit: login ok\\r\\x00\\x1b[31m 404" in access[0]


def test_item_10_tracebacks_cannot_pass_for_records() -> None:
    try:
        raise RuntimeError("boom\nFORGED INFO keel.audit: login ok")
    except RuntimeError:
        record = logging.LogRecord("keel.http", logging.ERROR, __file__, 1, "failed\x00", None, None)
        import sys

        record.exc_info = sys.exc_info()
    formatter = TextFormatter()
    record.exc_text = formatter.formatException(record.exc_info)  # type: ignore[arg-type]
    lines = formatter.format(record).splitlines()
    assert lines[0].endswith("keel.http: failed\\x00")
    assert all(line.startswith("  | ") for line in lines[1:]) and len(lines) > 2
