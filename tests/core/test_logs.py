"""Logging (SPEC §11): JSON lines with the request id, text in development, redaction."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import jsonify

from core.logs import redact
from tests.core.conftest import json_lines

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
API_KEY = "keel_k1a2b3_Zm9vYmFyYmF6cXV4cXV1eA"


def test_json_lines_carry_request_id_and_are_redacted(make_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(LOG_FORMAT="json")
    log = logging.getLogger("tests.route")

    @app.get("/probe/log")
    def route() -> Any:
        log.info("hello %s", "world")
        log.warning("login password=hunter2 Authorization: Bearer %s key=%s", JWT, API_KEY)
        log.info("payload %s", {"password": "pa55word", "api_key": "abc123", "user": "bob"})
        return jsonify({})

    capsys.readouterr()
    response = app.test_client().get("/probe/log", headers={"X-Request-ID": "rid-logs-1"})
    out = capsys.readouterr().out
    lines = json_lines(out)
    ours = [line for line in lines if line["logger"] == "tests.route"]
    assert [line["level"] for line in ours] == ["INFO", "WARNING", "INFO"]
    assert ours[0]["message"] == "hello world"
    assert all(line["request_id"] == "rid-logs-1" == response.headers["X-Request-ID"] for line in ours)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    for secret in ("hunter2", JWT, API_KEY, "pa55word", "abc123"):
        assert secret not in out, secret
    assert "'user': 'bob'" in ours[2]["message"]  # only the sensitive fields go


def test_text_format_in_development_json_in_production(make_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    make_app(LOG_FORMAT=None)  # APP_ENV=test: text
    capsys.readouterr()
    logging.getLogger("tests.fmt").warning("plain line")
    out = capsys.readouterr().out
    assert "WARNING tests.fmt: plain line" in out and not json_lines(out)


def test_log_lines_outside_a_request_have_no_request_id(make_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    make_app(LOG_FORMAT="json")
    capsys.readouterr()
    logging.getLogger("tests.bg").warning("background work")
    (line,) = [x for x in json_lines(capsys.readouterr().out) if x["logger"] == "tests.bg"]
    assert "request_id" not in line and line["message"] == "background work"


def test_log_file_is_written_too(make_app: Any, tmp_path: Any) -> None:
    path = tmp_path / "keel.log"
    make_app(LOG_FILE=str(path), LOG_FORMAT="json")
    logging.getLogger("tests.file").warning("to the file token=abcdef")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = path.read_text()
    assert "to the file token=[REDACTED]" in text and "abcdef" not in text
    from core.logs import configure_logging

    configure_logging()  # closes the file handler


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("password=hunter2 next", "hunter2", "next"),
        ('{"refresh_token": "r-tok-1", "n": 1}', "r-tok-1", '"n": 1'),
        ("Authorization: Bearer abc.def", "abc.def", "Authorization"),
        ("X-API-Key: " + API_KEY, API_KEY, "X-API-Key"),
        ("db at postgresql://keel:s3cr3t@db:5432/keel", "s3cr3t", "@db:5432/keel"),
        ("VAULT_SECRET_ID=9f8e7d", "9f8e7d", "VAULT_SECRET_ID"),
        ("client_secret: 'xyz789'", "xyz789", "client_secret"),
        ("jwt " + JWT, JWT, "jwt"),
    ],
)
def test_redaction(text: str, hidden: str, kept: str) -> None:
    out = redact(text)
    assert hidden not in out and kept in out and "REDACTED" in out
