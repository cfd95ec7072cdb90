"""Hardening (issue 12) of the HTTP pipeline: items 3, 9 and 11, each a regression test named after it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import server_env, start_server

LIMIT = 600


def _chunked_post(url: str, path: str, parts: list[bytes]) -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for part in parts:
        conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    body = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, body


def _register_body(username: str, size: int) -> bytes:
    """A valid registration body of exactly ``size`` bytes (JSON whitespace as padding)."""
    body = json.dumps({"username": username, "password": "chunked-password-1"}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def _check_chunked_limit(url: str) -> None:
    # exactly the limit, valid JSON, then more bytes: refused whole, nothing registered
    status, body = _chunked_post(url, "/auth/register", [_register_body("chunky", LIMIT), b"GARBAGE" * 20])
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    login = requests.post(
        f"{url}/auth/login", json={"username": "chunky", "password": "chunked-password-1"}, timeout=10
    )
    assert login.status_code == 401  # the truncated prefix was not processed
    # a chunked body within the limit is an ordinary body
    status, body = _chunked_post(
        url, "/auth/register", [_register_body("chunky2", 200)[:90], _register_body("chunky2", 200)[90:]]
    )
    assert status == 201, body


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "test",
        "PORT": str(port),
        "MAX_CONTENT_LENGTH": str(LIMIT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "SECRETS_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_item_03_chunked_body_over_the_limit_is_413_on_the_development_server(dev_server: str) -> None:
    _check_chunked_limit(dev_server)


@pytest.mark.slow
def test_item_03_chunked_body_over_the_limit_is_413_under_gunicorn(tmp_path: Path, redis_server_url: str) -> None:
    env = server_env(tmp_path, redis_server_url, f"keel-h3-{os.getpid()}:", free_port())
    env["MAX_CONTENT_LENGTH"] = str(LIMIT)
    server = start_server(env, tmp_path / "gunicorn.log")
    try:
        _check_chunked_limit(server.url)
    finally:
        assert server.stop() == 0, server.log_tail()


def test_item_09_no_redirect_bypasses_the_pipeline_or_reflects_the_host(make_app: Any) -> None:
    client = make_app().test_client()
    for path in ("/actions//system_info", "//healthz", "/auth//me"):
        response = client.get(path, headers={"Host": "evil.example"})
        assert response.status_code == 404, path  # not a 308 to http://evil.example/...
        assert "Location" not in response.headers and response.is_json
        assert response.headers["X-Request-ID"]  # answered through the pipeline
    assert client.get("/docs/").status_code == 200  # served, not redirected


def test_item_09_trusted_hosts(make_app: Any) -> None:
    client = make_app(TRUSTED_HOSTS="api.example.com").test_client()
    assert client.get("/healthz", headers={"Host": "api.example.com"}).status_code == 200
    refused = client.get("/actions/system_info", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "bad_request"
    assert "evil.example" not in refused.get_data(as_text=True)
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400  # unknown routes too
    for probe in ("/healthz", "/ready", "/metrics"):  # kubelets and scrapers send pod IPs as Host
        assert client.get(probe, headers={"Host": "10.1.2.3:8080"}).status_code == 200, probe


def test_item_11_security_headers(make_app: Any) -> None:
    client = make_app(HSTS_SECONDS=31536000).test_client()
    for path in ("/healthz", "/actions/system_info", "/nope", "/openapi.json", "/docs"):
        response = client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "no-referrer", path
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    docs = client.get("/docs")
    csp = docs.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "Content-Security-Policy" not in client.get("/healthz").headers  # JSON needs none
    assert "Strict-Transport-Security" not in make_app().test_client().get("/healthz").headers  # off by default


def test_item_11_responses_carrying_secrets_are_not_stored(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    assert client.post("/auth/register", json={"username": "nostore", "password": "no-store-pass"}).status_code == 201
    login = client.post("/auth/login", json={"username": "nostore", "password": "no-store-pass"})
    assert login.status_code == 200 and login.headers["Cache-Control"] == "no-store"
    refreshed = client.post("/auth/refresh", json={"refresh_token": login.json["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.headers["Cache-Control"] == "no-store"
    bearer = {"Authorization": f"Bearer {refreshed.json['access_token']}"}
    key = client.post("/auth/api-keys", json={"name": "k", "scopes": []}, headers=bearer)
    assert key.status_code == 201 and key.headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in client.get("/auth/me", headers=bearer).headers  # nothing secret there


def test_item_13_every_json_body_goes_through_one_parser(make_app: Any) -> None:
    """Plain Flask views of a module (request.get_json()), @protect routes and actions alike."""
    from flask import request

    app = make_app()
    app.add_url_rule("/plain", "plain", lambda: {"got": request.get_json()}, methods=["POST"])
    client = app.test_client()
    deep = "[" * 10000 + "]" * 10000
    duplicate = '{"username": "a", "password": "pw-123456789", "username": "b"}'
    nul = '{"username": "a\\u0000b", "password": "pw-123456789"}'
    client.post("/auth/register", json={"username": "parser", "password": "parser-pass-1"})
    token = client.post("/auth/login", json={"username": "parser", "password": "parser-pass-1"}).json["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    for path in ("/plain", "/auth/login", "/auth/register", "/auth/refresh", "/actions/create_task"):
        for body, reason in ((deep, "nested too deeply"), (duplicate, "more than once"), (nul, "NUL")):
            response = client.post(path, data=body, content_type="application/json", headers=bearer)
            assert response.status_code == 400, (path, reason, response.status_code)
            assert reason in response.json["error"]["message"], (path, response.json)
    assert client.post("/plain", json={"ok": "é"}).json == {"got": {"ok": "é"}}
