"""The HTTP contract through the real server (gunicorn, 2 sync workers): SPEC §3, §4.5, §11, §12."""

from __future__ import annotations

import re
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port
from tests.e2e.conftest import Server, server_env, start_server

pytestmark = pytest.mark.slow


def error_of(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    """The SPEC §3 error shape, with the request id of the header."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body: dict[str, Any] = resp.json()
    assert set(body) == {"success", "error", "request_id"}, body
    assert body["success"] is False
    assert body["error"]["code"] == code, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    assert body["request_id"] == resp.headers["X-Request-ID"]
    return body


def auth(server: Server, who: str = "user") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[who]}"}


# --- errors ----------------------------------------------------------------------------------


def test_unknown_route_and_unknown_action_are_404_json(server: Server) -> None:
    error_of(requests.get(f"{server.url}/no/such/page", timeout=5), 404, "not_found")
    error_of(requests.get(f"{server.url}/actions/no_such_action", timeout=5), 404, "not_found")
    # no fuzzy matching: a near miss of a real action is a 404 too
    error_of(requests.get(f"{server.url}/actions/list_task", headers=auth(server), timeout=5), 404, "not_found")


def test_undeclared_method_is_405_with_allow(server: Server) -> None:
    resp = requests.put(f"{server.url}/actions/create_task", json={"title": "x"}, headers=auth(server), timeout=5)
    error_of(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]
    resp = requests.get(f"{server.url}/auth/login", timeout=5)
    error_of(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


def test_two_megabyte_body_is_413(server: Server) -> None:
    body = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    resp = requests.post(
        f"{server.url}/actions/create_task",
        data=body,
        headers={**auth(server), "Content-Type": "application/json"},
        timeout=10,
    )
    error_of(resp, 413, "payload_too_large")
    # the worker is fine afterwards
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_body_that_is_not_json_is_415(server: Server) -> None:
    resp = requests.post(
        f"{server.url}/actions/create_task",
        data="title=x",
        headers={**auth(server), "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    error_of(resp, 415, "unsupported_media_type")
    resp = requests.post(
        f"{server.url}/auth/login", data="user", headers={"Content-Type": "text/plain"}, timeout=5
    )
    error_of(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize("raw", [b'{"title": ', b"[1, 2]", b'"just a string"', b"\xff\xfe{}"])
def test_malformed_json_or_not_an_object_is_400(server: Server, raw: bytes) -> None:
    headers = {**auth(server), "Content-Type": "application/json"}
    resp = requests.post(f"{server.url}/actions/create_task", data=raw, headers=headers, timeout=5)
    error_of(resp, 400, "bad_request")
    resp = requests.post(f"{server.url}/auth/login", data=raw, headers={"Content-Type": "application/json"}, timeout=5)
    error_of(resp, 400, "bad_request")


def test_invalid_parameters_are_all_reported(server: Server) -> None:
    resp = requests.post(
        f"{server.url}/actions/create_task",
        json={"title": "", "priority": 9, "surprise": 1},
        headers=auth(server),
        timeout=5,
    )
    body = error_of(resp, 400, "validation_error")
    assert {d["param"] for d in body["error"]["details"]} == {"title", "priority", "surprise"}


def test_missing_credentials_is_401_with_www_authenticate(server: Server) -> None:
    resp = requests.get(f"{server.url}/actions/list_tasks", timeout=5)
    error_of(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = requests.get(f"{server.url}/auth/me", headers={"Authorization": "Bearer not.a.jwt"}, timeout=5)
    error_of(resp, 401, "unauthorized")


def test_missing_role_is_403(server: Server) -> None:
    error_of(requests.get(f"{server.url}/actions/list_bans", headers=auth(server), timeout=5), 403, "forbidden")
    assert requests.get(f"{server.url}/actions/list_bans", headers=auth(server, "admin"), timeout=5).ok


def test_action_round_trip_201_then_200(server: Server) -> None:
    resp = requests.post(f"{server.url}/actions/create_task", json={"title": "e2e"}, headers=auth(server), timeout=5)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["success"] is True and created["action"] == "create_task"
    assert created["request_id"] == resp.headers["X-Request-ID"]
    task_id = created["result"]["id"]
    resp = requests.get(f"{server.url}/actions/get_task", params={"id": str(task_id)}, headers=auth(server), timeout=5)
    assert resp.status_code == 200 and resp.json()["result"]["title"] == "e2e"


def test_findings_of_the_generated_run_stay_fixed(server: Server) -> None:
    """Regressions of what schemathesis found (each was a 500, an accepted bad name, or undocumented)."""
    # a user id beyond 64 bits is no user (was: OverflowError in the driver, 500)
    resp = requests.post(
        f"{server.url}/auth/api-keys", json={"name": "k", "owner_id": 2**70}, headers=auth(server, "admin"), timeout=5
    )
    error_of(resp, 404, "not_found")
    # an offset beyond the documented maximum is a 400 (was: 500 from the database)
    resp = requests.get(
        f"{server.url}/actions/list_tasks", params={"offset": str(2**70)}, headers=auth(server), timeout=5
    )
    assert error_of(resp, 400, "validation_error")["error"]["details"][0]["param"] == "offset"
    # a username with a trailing newline is not a valid username (was: registered)
    resp = requests.post(f"{server.url}/auth/register", json={"username": "eve\n", "password": "x" * 12}, timeout=5)
    error_of(resp, 400, "validation_error")
    # 201 and 409 are documented for actions; the auth routes document their bodies and security
    doc = requests.get(f"{server.url}/openapi.json", timeout=5).json()
    assert {"201", "409"} <= set(doc["paths"]["/actions/create_task"]["post"]["responses"])
    register = doc["paths"]["/auth/register"]["post"]
    assert register["security"] == [] and "201" in register["responses"]
    assert register["requestBody"]["content"]["application/json"]["schema"]["required"] == ["username", "password"]
    assert doc["paths"]["/auth/me"]["get"]["security"] == [{"bearerAuth": []}]


# --- request id ------------------------------------------------------------------------------


def test_valid_request_id_is_echoed_on_success_and_error(server: Server) -> None:
    rid = f"e2e-{uuid.uuid4().hex}.1_A"
    resp = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": rid}, timeout=5)
    assert resp.headers["X-Request-ID"] == rid
    resp = requests.get(f"{server.url}/nowhere", headers={"X-Request-ID": rid}, timeout=5)
    assert error_of(resp, 404, "not_found")["request_id"] == rid


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "semi;colon", "ümlaut", ""])
def test_invalid_request_id_is_replaced(server: Server, bad: str) -> None:
    resp = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": bad.encode()}, timeout=5)
    rid = resp.headers["X-Request-ID"]
    assert rid != bad and re.fullmatch(r"[0-9a-f]{32}", rid), rid


# --- docs ------------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_docs_page_and_its_assets_are_served_locally(server: Server) -> None:
    resp = requests.get(f"{server.url}/docs", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert not re.search(r"(https?:)?//[A-Za-z0-9]", resp.text), "external URL in /docs"
    parser = _Refs()
    parser.feed(resp.text)
    assert any(r.endswith(".css") for r in parser.refs) and any(r.endswith(".js") for r in parser.refs)
    kinds = {".css": "text/css", ".js": "javascript", ".png": "image/png"}
    sizes = {}
    for ref in parser.refs:
        asset = requests.get(requests.compat.urljoin(f"{server.url}/docs", ref), timeout=10)
        assert asset.status_code == 200, ref
        expected = next(v for k, v in kinds.items() if ref.endswith(k))
        assert expected in asset.headers["Content-Type"], (ref, asset.headers["Content-Type"])
        sizes[ref] = len(asset.content)
        if ref.endswith("init.js"):
            assert '"openapi.json"' in asset.text  # the document of this server
            assert "validatorUrl: null" in asset.text  # no call to the online validator
    assert max(sizes.values()) > 100_000, sizes  # the real Swagger UI bundle, not a stub
    # what the page loads is the OpenAPI 3.1 document
    assert requests.get(f"{server.url}/openapi.json", timeout=5).json()["openapi"].startswith("3.1")
    error_of(requests.get(f"{server.url}/docs/../../app.py", timeout=5), 404, "not_found")


# --- metrics ---------------------------------------------------------------------------------


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0][len(name) + 1 :].split(",") == wanted.split(","):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_are_summed_over_both_workers(server: Server) -> None:
    metrics_dir = Path(server.env["PROMETHEUS_MULTIPROC_DIR"])

    def total() -> float:
        text = requests.get(f"{server.url}/metrics", timeout=5).text
        return _sample(text, "keel_requests_total", action="system_info", status="200")

    before = total()
    sent = 60
    for _ in range(sent):  # a new connection each: the two workers share the accepting
        resp = requests.get(f"{server.url}/actions/system_info", headers={"Connection": "close"}, timeout=5)
        assert resp.status_code == 200
    # both workers served (each writes its own file), and every /metrics answer, from either
    # worker, reports the sum of both
    writers = {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
    assert len(writers) >= 2, sorted(p.name for p in metrics_dir.iterdir())
    assert {total() - before for _ in range(6)} == {float(sent)}
    text = requests.get(f"{server.url}/metrics", timeout=5)
    assert text.headers["Content-Type"].startswith("text/plain")
    assert "keel_request_duration_seconds_bucket" in text.text


# --- shutdown --------------------------------------------------------------------------------


def test_sigterm_lets_both_workers_dispose_and_exit_cleanly(tmp_path: Path, redis_server_url: str) -> None:
    """A second server (the session's one is stopped the same way at its end)."""
    env = server_env(tmp_path, redis_server_url, "unused:", free_port())
    env.update(LOG_LEVEL="INFO")
    env.pop("REDIS_URL")  # the in-process limiter store: nothing to clean up in Redis
    srv = start_server(env, tmp_path / "gunicorn.log")
    try:
        deadline = time.monotonic() + 20
        while srv.log.read_text(errors="replace").count(" started (env=test") < 2:  # both workers up
            assert time.monotonic() < deadline, srv.log_tail()
            time.sleep(0.05)
        assert requests.get(f"{srv.url}/actions/system_info", timeout=5).status_code == 200
        started = time.monotonic()
        status = srv.stop(timeout=25)
        assert status == 0, srv.log_tail()
        assert time.monotonic() - started < 8, "graceful shutdown waited for nothing"
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
    log = srv.log.read_text(errors="replace")
    assert log.count("keel disposed (worker") == 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{srv.url}/healthz", timeout=2)
