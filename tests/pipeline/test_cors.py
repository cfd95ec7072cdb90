"""CORS: listed origins may call the API from a browser; others get no CORS headers."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ConfigError

APP_ORIGIN = "https://app.example.com"


def test_same_origin_only_by_default(client: Any) -> None:
    resp = client.get("/actions/system_info", headers={"Origin": APP_ORIGIN})
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_listed_origin_gets_allow_origin_and_exposed_headers(make_app: Any) -> None:
    client = make_app(CORS_ORIGINS=APP_ORIGIN).test_client()
    resp = client.get("/actions/system_info", headers={"Origin": APP_ORIGIN})
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in resp.headers["Vary"]
    exposed = resp.headers["Access-Control-Expose-Headers"]
    assert "X-Request-ID" in exposed and "X-RateLimit-Remaining" in exposed
    # an error answer is readable by the browser too
    missing = client.get("/actions/nope", headers={"Origin": APP_ORIGIN})
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    other = client.get("/actions/system_info", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_preflight_is_answered_before_auth_and_limits(make_app: Any) -> None:
    app = make_app(CORS_ORIGINS=f"{APP_ORIGIN},https://admin.example.com", RATE_LIMIT_IP="2/minute")
    client = app.test_client()
    preflight = {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    for _ in range(5):  # more than the IP limit: preflights are not counted
        resp = client.options("/actions/revoke_user_tokens", headers=preflight)
        assert resp.status_code == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "X-API-Key" in resp.headers["Access-Control-Allow-Headers"]
    assert client.get("/actions/system_info").status_code == 200
    # a preflight from an unlisted origin is not answered with CORS headers
    resp = client.options("/actions/system_info", headers={**preflight, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_wildcard_outside_production_and_refused_in_production(make_app: Any) -> None:
    client = make_app(CORS_ORIGINS="*").test_client()
    resp = client.get("/healthz", headers={"Origin": "https://anything.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    with pytest.raises(ConfigError, match=r"CORS_ORIGINS=\*"):
        make_app(APP_ENV="production", CORS_ORIGINS="*", JWT_SECRET_KEY="k" * 40, API_KEY_PEPPER="p" * 40)
