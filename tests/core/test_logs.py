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


def _redact_every_pattern(text: str) -> str:
    from core.logs import _REDACTIONS

    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


@pytest.mark.parametrize(
    "text",
    [
        "GET /actions/echo 200",
        f"token {JWT}",
        f"key {API_KEY}",
        "Authorization: BASIC dXNlcjpwYXNz",
        "bearer abc.def",
        '{"Api-Key": "k1", "PASSWD": "x", "client_secret": "s", "Pepper": "p", "credentials": "c"}',
        "postgresql://keel:s3cret@db:5432/keel",
        "nothing secret-looking here: user=bob id=42",
        "",
    ],
)
def test_redact_skips_only_text_no_pattern_would_change(text: str) -> None:
    """The one-search shortcut of redact() gives what running every redaction gives."""
    assert redact(text) == _redact_every_pattern(text)


def test_access_log_record_is_the_one_logger_info_makes(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The access log builds its record without logger.info()'s stack walk: every field a
    formatter can read is the same as logger.info() from log_request would give."""
    from core.http import access_log

    app = make_app(LOG_FORMAT="json")
    caplog.set_level(logging.INFO, logger="keel.access")
    with app.test_request_context("/probe/path?q=1", method="POST"):
        response = app.response_class("", status=201)
        access_log.log_request(_req(), None, response)
        (fast,) = [r for r in caplog.records if r.name == "keel.access"]
        caplog.clear()
        access_log.logger.info("%s %s %s", "POST", "/probe/path", 201, extra={"status": 201, "duration_ms": None})
        (slow,) = [r for r in caplog.records if r.name == "keel.access"]
    # where the record says it comes from: log_request (fast), this test (slow)
    skip = {"created", "msecs", "relativeCreated", "lineno", "pathname", "filename", "module", "funcName"}
    assert {k: v for k, v in vars(fast).items() if k not in skip} == {
        k: v for k, v in vars(slow).items() if k not in skip
    }
    code = access_log.log_request.__code__
    assert (fast.funcName, fast.pathname, fast.module) == ("log_request", code.co_filename, "access_log")
    assert code.co_firstlineno < fast.lineno <= max(line for *_, line in code.co_lines() if line)
    assert fast.getMessage() == "POST /probe/path 201"
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None:
            for name in skip:
                setattr(fast, name, getattr(slow, name))
            assert handler.format(fast) == handler.format(slow)


def _req() -> Any:
    from flask import request

    return request._get_current_object()
