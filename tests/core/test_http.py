"""HTTP conventions (SPEC §3) and health endpoints (SPEC §11)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import jsonify, request

from core.errors import Conflict, ServiceUnavailable
from tests.core.conftest import json_lines


@pytest.fixture
def probe_app(make_app: Any) -> Any:
    """An app with a few routes that read JSON, ignore the body, fail on purpose."""
    app = make_app(MAX_CONTENT_LENGTH=1000, LOG_FORMAT="json")

    @app.post("/probe/echo")
    def echo() -> Any:
        return jsonify(request.get_json())

    @app.post("/probe/ignore")
    def ignore() -> Any:
        return jsonify({"ok": True})

    @app.get("/probe/boom")
    def boom() -> Any:
        raise RuntimeError("database password=hunter2 exploded")

    @app.get("/probe/conflict")
    def conflict() -> Any:
        raise Conflict("Already there.", details={"id": 3})

    @app.get("/probe/down")
    def down() -> Any:
        raise ServiceUnavailable("Search is down.", retry_after=7)

    return app


def assert_error_shape(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"success", "error", "request_id"}
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_404_unknown_route(probe_app: Any) -> None:
    body = assert_error_shape(probe_app.test_client().get("/no/such/route"), 404, "not_found")
    assert body["error"]["message"] == "Not found."


def test_405_method_not_allowed_lists_allowed_methods(probe_app: Any) -> None:
    response = probe_app.test_client().delete("/probe/echo")
    assert_error_shape(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_400_malformed_json(probe_app: Any) -> None:
    response = probe_app.test_client().post("/probe/echo", data="{not json", content_type="application/json")
    assert_error_shape(response, 400, "bad_request")
    ok = probe_app.test_client().post("/probe/echo", json={"a": 1})
    assert ok.status_code == 200 and ok.get_json() == {"a": 1}


def test_415_body_that_is_not_json(probe_app: Any) -> None:
    response = probe_app.test_client().post("/probe/echo", data="a=1", content_type="text/plain")
    assert_error_shape(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("path", ["/probe/echo", "/probe/ignore"])
def test_413_body_over_max_content_length(probe_app: Any, path: str) -> None:
    response = probe_app.test_client().post(path, data="x" * 1001, content_type="application/json")
    assert_error_shape(response, 413, "payload_too_large")


def test_500_unexpected_exception_is_generic_and_logged_with_request_id(
    probe_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = probe_app.test_client().get("/probe/boom", headers={"X-Request-ID": "req-500-abc"})
    body = assert_error_shape(response, 500, "internal_error")
    assert body["error"] == {"code": "internal_error", "message": "Internal server error.", "details": None}
    assert "exploded" not in response.get_data(as_text=True)
    lines = json_lines(capsys.readouterr().out)
    record = next(line for line in lines if line["level"] == "ERROR" and "RuntimeError" in line["message"])
    assert record["request_id"] == "req-500-abc"
    assert "GET /probe/boom" in record["message"]
    assert "Traceback" in record["exc_info"] and "exploded" in record["exc_info"]
    assert "hunter2" not in record["exc_info"]  # redacted even inside tracebacks


def test_keel_errors_keep_their_status_details_and_headers(probe_app: Any) -> None:
    client = probe_app.test_client()
    body = assert_error_shape(client.get("/probe/conflict"), 409, "conflict")
    assert body["error"]["details"] == {"id": 3} and body["error"]["message"] == "Already there."
    down = client.get("/probe/down")
    assert_error_shape(down, 503, "service_unavailable")
    assert down.headers["Retry-After"] == "7"


@pytest.mark.parametrize(
    ("incoming", "echoed"),
    [
        ("abc-123.X_y", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("has space", False),
        ("semi;colon", False),
        ("", False),
    ],
)
def test_request_id_echo_or_generation(client: Any, incoming: str, echoed: bool) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": incoming})
    rid = response.headers["X-Request-ID"]
    if echoed:
        assert rid == incoming
    else:
        assert rid != incoming and re.fullmatch(r"[0-9a-f]{32}", rid)


def test_generated_request_ids_differ(client: Any) -> None:
    assert client.get("/healthz").headers["X-Request-ID"] != client.get("/healthz").headers["X-Request-ID"]


def test_healthz_ready_health(client: Any) -> None:
    live = client.get("/healthz")
    assert live.status_code == 200 and live.get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "healthy"
    assert set(body) >= {"status", "version", "uptime_s", "managers", "modules"}
    assert body["managers"]["db"]["status"] == "healthy"
    assert body["modules"]["system"]["status"] == "healthy"
    assert all("latency_ms" in report for report in body["managers"].values())


def test_health_never_shows_database_credentials(make_app: Any, pg_config: dict[str, Any]) -> None:
    import sqlalchemy as sa

    url = sa.make_url(pg_config["DATABASE_URL"]).set(password="pw-in-url-42").render_as_string(hide_password=False)
    client = make_app(DATABASE_URL=url).test_client()
    for path in ("/health", "/ready", "/healthz"):
        text = client.get(path).get_data(as_text=True)
        assert "pw-in-url-42" not in text, path
    assert client.get("/health").get_json()["managers"]["db"]["status"] == "healthy"


def test_unhealthy_manager_fails_ready_and_health(app: Any) -> None:
    am = app.extensions["keel"]

    class Broken:
        name = "broken"

        def health(self) -> dict[str, Any]:
            raise ConnectionError("secret://user:pw@host is down")

        def dispose(self) -> None: ...

    am._managers["broken"] = Broken()  # a manager whose dependency is down
    client = app.test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert ready.get_json()["failing"]["broken"] == {
        "status": "unhealthy", "error": "ConnectionError", "latency_ms": ready.get_json()["failing"]["broken"][
            "latency_ms"]
    }
    health = client.get("/health")
    assert health.status_code == 503 and health.get_json()["status"] == "unhealthy"
    assert "pw" not in health.get_json()["managers"]["broken"].get("error", "")
    assert client.get("/healthz").status_code == 200
