"""Logging (SPEC §11): JSON lines with the request id, text in development, redaction."""

from __future__ import annotations

import io
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
from flask import g, jsonify

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
        "APIKEY=k2",
        "API_KEY=k3",
        "api-key: k4",
        "PassWd: p2",
        "X-Auth-Token: t2",
        "redis://:p4ss@cache:6379/0",
        # not ASCII: the case-insensitive search (ſ is an s, K a k to it)
        "paſſword=hunter2 ſecret=s5",
        "api_Key=k5 token=été",
        "café — nothing here",
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


@pytest.fixture
def own_logging(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``own_logging(**settings)``: an app whose logging configuration is Keel's own — pytest's
    capture handlers taken off the root logger while the app is made (they are put back after
    the test), as in a served process."""
    root = logging.getLogger()
    saved = root.handlers[:]

    def make(**settings: Any) -> Any:
        for handler in root.handlers[:]:
            if not getattr(handler, "_keel_handler", False):
                root.removeHandler(handler)
        return make_app(**settings)

    yield make
    from core.logs import configure_logging

    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    configure_logging()  # Keel's handlers again, next to pytest's: own_handlers() is None


def _access_lines(app: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(the line log_request writes given the request state, the line logger.handle() of the
    standard record writes) for the same request, at the same instant."""
    from core.http import access_log
    from core.http.state import RequestState

    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0427)  # LogRecord's clock, and the direct path's
    monkeypatch.setattr(access_log, "time", SimpleNamespace(perf_counter=lambda: 12.5))
    state = RequestState("rid-direct-1", 12.25, action="notes.create", client_ip="203.0.113.7", identity="user:42")
    with app.test_request_context("/probe/a%0Ab/token=abcdef", method="POST"):
        g.keel = state
        response = app.response_class("", status=201)
        capsys.readouterr()
        access_log.log_request(_req(), 12.25, response, state)
        direct = capsys.readouterr().out
        access_log.log_request(_req(), 12.25, response)  # no state: the standard record
        standard = capsys.readouterr().out
    return direct, standard


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_access_log_direct_line_is_the_standard_line(
    own_logging: Any, fmt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Keel's own configuration the access log writes its line straight to Keel's handler:
    byte for byte the line the standard record gives (time, fields and their order, redaction,
    control characters escaped)."""
    from core.http import access_log
    from core.logs import own_handlers

    app = own_logging(LOG_FORMAT=fmt)
    assert own_handlers(access_log.logger) == logging.getLogger().handlers  # the direct path is taken
    direct, standard = _access_lines(app, capsys, monkeypatch)
    assert direct == standard
    assert direct.count("\n") == 1 and "abcdef" not in direct and "[REDACTED]" in direct
    if fmt == "json":
        (line,) = json_lines(direct)
        assert line == {
            "time": "2023-11-14T22:13:20.042Z",
            "level": "INFO",
            "logger": "keel.access",
            "message": "POST /probe/a\nb/token=[REDACTED] 201",
            "status": 201,
            "duration_ms": 250.0,
            "request_id": "rid-direct-1",
            "identity": "user:42",
            "action": "notes.create",
            "client_ip": "203.0.113.7",
        }
        assert list(line) == list(json.loads(standard))
    else:
        assert "INFO    keel.access: POST /probe/a\\nb/token=[REDACTED] 201  [status=201 duration_ms=250.0 " in direct


def _user_handler() -> logging.Handler:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(name)s|%(message)s|%(status)s"))
    return handler


@pytest.mark.parametrize(
    "change",
    [
        "root handler",
        "access handler",
        "keel handler",
        "access filter",
        "handler filter",
        "handler level",
        "formatter",
        "record factory",
        "no propagation",
    ],
)
def test_access_log_takes_the_standard_path_once_logging_is_changed(  # noqa: C901 - one branch per change
    own_logging: Any, change: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler, filter, level, formatter or record factory a user adds after Keel configured
    logging: the record is made and handled the standard way, so what the user added sees it —
    and Keel's handler still writes the same line."""
    from core.http import access_log
    from core.logs import own_handlers

    app = own_logging(LOG_FORMAT="json")
    root = logging.getLogger()
    (keel_handler,) = root.handlers
    seen: list[logging.LogRecord] = []
    mine = _user_handler()

    def spy(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    if change == "root handler":
        monkeypatch.setattr(root, "handlers", [*root.handlers, mine])
    elif change == "access handler":
        monkeypatch.setattr(access_log.logger, "handlers", [mine])
    elif change == "keel handler":
        monkeypatch.setattr(logging.getLogger("keel"), "handlers", [mine])
    elif change == "access filter":
        monkeypatch.setattr(access_log.logger, "filters", [spy])
    elif change == "handler filter":
        monkeypatch.setattr(keel_handler, "filters", [*keel_handler.filters, spy])
    elif change == "handler level":
        monkeypatch.setattr(keel_handler, "level", logging.WARNING)
    elif change == "formatter":
        monkeypatch.setattr(keel_handler, "formatter", logging.Formatter("%(levelname)s %(message)s"))
    elif change == "record factory":
        base = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            seen.append(record)
            return record

        monkeypatch.setattr(logging, "_logRecordFactory", factory)
    elif change == "no propagation":
        monkeypatch.setattr(access_log.logger, "propagate", False)
        monkeypatch.setattr(access_log.logger, "handlers", [mine])
    assert own_handlers(access_log.logger) is None
    direct, standard = _access_lines(app, capsys, monkeypatch)
    assert direct == standard
    if change in ("access filter", "handler filter", "record factory"):
        assert len(seen) == 2 and all(r.name == "keel.access" for r in seen)
    if change in ("root handler", "access handler", "keel handler", "no propagation"):
        text = mine.stream.getvalue()  # type: ignore[attr-defined]
        assert text.count("keel.access|POST /probe/a\nb/token=[REDACTED] 201|201\n") == 2
    if change == "handler level":
        assert direct == ""
    if change == "formatter":
        assert direct == "INFO POST /probe/a\nb/token=[REDACTED] 201\n"
    if change == "no propagation":
        assert direct == ""


def test_access_log_direct_path_only_with_keel_console_handlers(own_logging: Any, tmp_path: Any) -> None:
    """A LOG_FILE handler, or a handler on the root logger before Keel configured logging: the
    standard path."""
    from core.http import access_log
    from core.logs import configure_logging, own_handlers

    own_logging(LOG_FILE=str(tmp_path / "keel.log"), LOG_FORMAT="json")
    assert own_handlers(access_log.logger) is None
    configure_logging("INFO", "json")
    assert own_handlers(access_log.logger) is not None
    root = logging.getLogger()
    mine = _user_handler()
    root.addHandler(mine)
    try:
        configure_logging("INFO", "json")
        assert own_handlers(access_log.logger) is None
    finally:
        root.removeHandler(mine)
