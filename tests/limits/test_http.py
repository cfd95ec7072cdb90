"""Limits through HTTP: headers, levels, independence, client IP, order of errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.limits.conftest import api_key, counts, from_ip, user_token

NO_BANS = {"BAN_AFTER_VIOLATIONS": 1_000_000}


def statuses(client: Any, path: str, n: int, **kwargs: Any) -> list[int]:
    return [client.get(path, **kwargs).status_code for _ in range(n)]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_headers_and_429(limits_app: Any, redis_config: dict[str, Any], store: str) -> None:
    extra = redis_config if store == "redis" else {}
    app = limits_app(RATE_LIMIT_IP="3/minute", **NO_BANS, **extra)
    client = app.test_client()
    first = client.get("/actions/t_public")
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert first.headers["X-RateLimit-Reset"] == "60"
    assert first.headers["RateLimit-Policy"] == '"ip";q=3;w=60'
    assert first.headers["RateLimit"] == '"ip";r=2;t=60'
    assert statuses(client, "/actions/t_public", 2) == [200, 200]
    refused = client.get("/actions/t_public")
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["success"] is False and body["error"]["code"] == "rate_limited"
    assert 59 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_tightest_limit_is_reported_and_tiers_apply(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(action_limit="2/second;4/minute", RATE_LIMIT_IP="100/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    resp = client.get("/actions/t_open_limited")
    assert resp.headers["X-RateLimit-Limit"] == "2" and resp.headers["X-RateLimit-Remaining"] == "1"
    policy = resp.headers["RateLimit-Policy"]
    assert '"ip";q=100;w=60' in policy and '"action-1s";q=2;w=1' in policy and '"action-60s";q=4;w=60' in policy
    assert statuses(client, "/actions/t_open_limited", 2) == [200, 429]
    assert client.get("/actions/t_open_limited").headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert statuses(client, "/actions/t_open_limited", 3) == [200, 200, 429]  # 4 of the minute used
    assert int(client.get("/actions/t_open_limited").headers["Retry-After"]) >= 57


def test_many_ips_each_get_exactly_their_limit(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_IP="10/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    for i in range(50):
        got = statuses(client, "/actions/t_public", 15, **from_ip(f"198.51.100.{i}"))
        assert got.count(200) == 10 and got.count(429) == 5, (i, got)


def test_spoofed_forwarded_for_is_ignored_without_trusted_proxies(
    limits_app: Any, redis_config: dict[str, Any]
) -> None:
    app = limits_app(RATE_LIMIT_IP="10/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    got = [
        client.get("/actions/t_public", headers={"X-Forwarded-For": f"10.{i // 250}.{i % 250}.1"}).status_code
        for i in range(1000)
    ]
    assert got.count(200) == 10 and got.count(429) == 990


def test_forwarded_for_is_used_behind_one_trusted_proxy(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_IP="3/minute", TRUSTED_PROXY_COUNT=1, **NO_BANS, **redis_config)
    client = app.test_client()
    for i in range(20):
        # the client may prepend anything; the proxy appends the address it saw (rightmost)
        xff = f"6.6.6.6, 203.0.113.{i}"
        got = statuses(client, "/actions/t_public", 5, headers={"X-Forwarded-For": xff})
        assert got == [200, 200, 200, 429, 429]
        assert client.get("/actions/t_any", headers={"X-Forwarded-For": xff}).status_code == 401


def test_a_user_shares_one_bucket_across_ips(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_IP="100/minute", RATE_LIMIT_USER="6/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {user_token(app, 'roamer')}"}
    got = [
        client.get("/actions/t_any", headers=headers, **from_ip(f"192.0.2.{i}")).status_code
        for i in range(5)
        for _ in range(3)
    ]
    assert got.count(200) == 6 and got.count(429) == 9
    other = {"Authorization": f"Bearer {user_token(app, 'other')}"}
    assert client.get("/actions/t_any", headers=other, **from_ip("192.0.2.1")).status_code == 200


def test_an_api_key_bucket_is_independent_of_ip(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_IP="100/minute", RATE_LIMIT_API_KEY="4/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    key_a, key_b = api_key(app, "a"), api_key(app, "b")
    assert statuses(client, "/actions/t_any", 5, headers={"X-API-Key": key_a}) == [200] * 4 + [429]
    # another IP does not reset key A; key B and anonymous callers on the same IP are unaffected
    assert client.get("/actions/t_any", headers={"X-API-Key": key_a}, **from_ip("192.0.2.77")).status_code == 429
    assert statuses(client, "/actions/t_any", 4, headers={"X-API-Key": key_b}) == [200] * 4
    assert client.get("/actions/t_public").status_code == 200


def test_action_limit_is_per_identity(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(action_limit="2/minute", RATE_LIMIT_IP="100/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    assert statuses(client, "/actions/t_open_limited", 3) == [200, 200, 429]
    assert statuses(client, "/actions/t_open_limited", 3, **from_ip("192.0.2.9")) == [200, 200, 429]
    headers = {"Authorization": f"Bearer {user_token(app, 'limited')}"}
    assert statuses(client, "/actions/t_limited", 3, headers=headers) == [200, 200, 429]
    assert client.get("/actions/t_public").status_code == 200  # the IP level still has room


def test_errors_come_in_order_ban_auth_forbidden_limit(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_IP="100/minute", RATE_LIMIT_USER="2/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    am = app.extensions["keel"]
    user = {"Authorization": f"Bearer {user_token(app, 'plain')}"}
    assert statuses(client, "/actions/t_any", 3, headers=user) == [200, 200, 429]
    # a forbidden request is reported as 403 even though the user's bucket is empty
    assert client.get("/actions/t_admin", headers=user).get_json()["error"]["code"] == "forbidden"
    # an invalid credential is 401 (not 429), a missing one too
    assert client.get("/actions/t_any", headers={"Authorization": "Bearer nope"}).status_code == 401
    # a banned IP is told so before anything else, with Retry-After
    am.limiter.ban("ip", "127.0.0.1", 30, actor="test")
    for headers in ({"Authorization": "Bearer nope"}, user, {}):
        resp = client.get("/actions/t_admin", headers=headers)
        assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "banned"
        assert 29 <= int(resp.headers["Retry-After"]) <= 30
    # a banned user is refused from any IP
    am.limiter.ban("user", "1", 30, actor="test")
    resp = client.get("/actions/t_any", headers=user, **from_ip("192.0.2.50"))
    assert resp.get_json()["error"]["code"] == "banned"


def test_revoked_token_is_refused_through_the_single_round_trip(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(**NO_BANS, **redis_config)
    client = app.test_client()
    token = user_token(app, "leaver")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/actions/t_any", headers=headers).status_code == 200
    assert client.post("/auth/logout", headers=headers).status_code == 200
    assert client.get("/actions/t_any", headers=headers).status_code == 401


def test_non_action_routes_get_the_ip_limit_and_probes_are_exempt(
    limits_app: Any, redis_config: dict[str, Any]
) -> None:
    app = limits_app(RATE_LIMIT_IP="2/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    assert statuses(client, "/t/plain", 3) == [200, 200, 429]
    assert client.get("/t/plain").headers["Retry-After"]
    for path in ("/healthz", "/ready"):
        assert statuses(client, path, 5) == [200] * 5
    app.extensions["keel"].limiter.ban("ip", "127.0.0.1", 60, actor="test")
    assert client.get("/t/plain").get_json()["error"]["code"] == "banned"
    assert client.get("/healthz").status_code == 200 and client.get("/ready").status_code == 200


def test_login_attempts_are_limited_per_username_and_per_ip(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_LOGIN="3/minute", RATE_LIMIT_IP="100/minute", **NO_BANS, **redis_config)
    client = app.test_client()
    wrong = {"username": "victim", "password": "wrong password"}
    got = [client.post("/auth/login", json=wrong, **from_ip(f"192.0.2.{i}")).status_code for i in range(4)]
    assert got == [401, 401, 401, 429]  # per username, whatever the IP
    got = [client.post("/auth/login", json={"username": f"u{i}", "password": "x" * 9}).status_code for i in range(4)]
    assert got == [401, 401, 401, 429]  # per IP, whatever the username


def test_failed_logins_ban_the_ip(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(BAN_AFTER_VIOLATIONS=3, BAN_DURATION=60, RATE_LIMIT_LOGIN="100/minute", **redis_config)
    client = app.test_client()
    wrong = {"username": "victim", "password": "wrong password"}
    assert [client.post("/auth/login", json=wrong).status_code for _ in range(3)] == [401, 401, 401]
    resp = client.post("/auth/login", json=wrong)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "banned"
    assert [b["identifier"] for b in app.extensions["keel"].limiter.list_bans()] == ["127.0.0.1"]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_hit_for_other_callers(make_app: Any, redis_config: dict[str, Any], store: str) -> None:
    """``am.limiter.hit()``: the same limiter for events that are not HTTP requests (Socket.IO
    messages); violations count toward the named identity's ban."""
    extra = redis_config if store == "redis" else {}
    am = make_app(BAN_AFTER_VIOLATIONS=2, BAN_DURATION=60, **extra).extensions["keel"]
    first = am.limiter.hit(("ws", "sid1"), "2/second", identity=("user", "9"), level="websocket")
    assert first.allowed and first.remaining == 1 and first.limit == 2 and first.retry_after == 0
    assert am.limiter.hit(("ws", "sid1"), "2/second", identity=("user", "9"), level="websocket").allowed
    refused = am.limiter.hit(("ws", "sid1"), "2/second", identity=("user", "9"), level="websocket")
    assert not refused.allowed and not refused.banned and refused.retry_after == 1
    assert am.limiter.hit(("ws", "sid2"), "2/second").allowed  # another key, its own bucket
    banned = am.limiter.hit(("ws", "sid1"), "2/second", identity=("user", "9"), level="websocket")
    assert banned.banned and banned.retry_after == 60
    assert am.limiter.ban_remaining("user", "9") == 60
    assert counts("keel_rate_limit_rejections_total") == {"websocket": 2}
    assert counts("keel_bans_total") == {"user": 1}
