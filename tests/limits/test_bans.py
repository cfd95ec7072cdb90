"""Auto-ban timing and escalation, persistence across restarts, lift, admin actions and CLI."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from core.errors import ValidationError
from tests.limits.conftest import counts, from_ip, user_token

ADMIN_IP = from_ip("192.0.2.200")


def code(resp: Any) -> str:
    body = resp.get_json()
    return "ok" if body.get("success") else str(body["error"]["code"])


def test_auto_ban_timing_and_escalation(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_IP="2/minute", BAN_AFTER_VIOLATIONS=3, BAN_WINDOW=10, BAN_DURATION=2, **redis_config)
    client = app.test_client()
    got = [code(client.get("/actions/t_public")) for _ in range(5)]
    assert got == ["ok", "ok", "rate_limited", "rate_limited", "banned"]  # 3rd violation bans
    banned_at = time.monotonic()
    resp = client.get("/actions/t_public")
    assert code(resp) == "banned" and resp.headers["Retry-After"] == "2"
    while code(client.get("/actions/t_public")) == "banned":
        time.sleep(0.05)
        assert time.monotonic() - banned_at < 4, "ban did not expire"
    assert abs((time.monotonic() - banned_at) - 2.0) <= 1.0
    # the IP is still over its limit: 3 more violations ban it again, for twice as long
    got = [code(client.get("/actions/t_public")) for _ in range(2)]
    assert got == ["rate_limited", "banned"]
    assert client.get("/actions/t_public").headers["Retry-After"] == "4"
    bans = app.extensions["keel"].limiter.list_bans()
    assert [(b["kind"], b["identifier"], b["strikes"]) for b in bans] == [("ip", "127.0.0.1", 2)]
    assert counts("keel_bans_total") == {"ip": 2}


def test_ban_fires_the_hook_and_the_audit_log(limits_app: Any, redis_config: dict[str, Any], caplog: Any) -> None:
    app = limits_app(RATE_LIMIT_IP="1/minute", BAN_AFTER_VIOLATIONS=2, **redis_config)
    events: list[dict[str, Any]] = []
    app.extensions["keel"].hooks.register("identity_banned", lambda **data: events.append(data))
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="keel.audit"):
        assert [code(client.get("/actions/t_public")) for _ in range(3)] == ["ok", "rate_limited", "banned"]
        app.extensions["keel"].limiter.lift_ban("ip", "127.0.0.1", actor="user:1")
    assert events == [{"kind": "ip", "identifier": "127.0.0.1", "seconds": 3600, "strikes": 1, "actor": "auto"}]
    audit = [r.getMessage() for r in caplog.records if r.name == "keel.audit"]
    assert any("ban: ip 127.0.0.1 for 3600s" in m for m in audit)
    assert any("ban lifted: ip 127.0.0.1 by user:1" in m for m in audit)


def test_no_ban_lands_on_a_spoofed_address(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(RATE_LIMIT_IP="2/minute", BAN_AFTER_VIOLATIONS=3, **redis_config)
    client = app.test_client()
    for i in range(10):
        client.get("/actions/t_public", headers={"X-Forwarded-For": f"203.0.113.{i}"})
    bans = app.extensions["keel"].limiter.list_bans()
    assert [(b["kind"], b["identifier"]) for b in bans] == [("ip", "127.0.0.1")]
    # the address the client tried to frame is not banned
    assert code(client.get("/actions/t_public", **from_ip("203.0.113.1"))) == "ok"


def test_bans_survive_a_restart_and_a_redis_wipe(
    limits_app: Any, redis_config: dict[str, Any], redis_url: str, redis_prefix: str
) -> None:
    settings = {"RATE_LIMIT_IP": "1/minute", "BAN_AFTER_VIOLATIONS": 2, "BAN_DURATION": 600, **redis_config}
    first = limits_app(**settings)
    client = first.test_client()
    assert [code(client.get("/actions/t_public")) for _ in range(3)] == ["ok", "rate_limited", "banned"]
    first.extensions["keel"].dispose()
    # a new app (a restarted worker) on the same Redis and database
    second = limits_app(**settings)
    assert code(second.test_client().get("/actions/t_public")) == "banned"
    second.extensions["keel"].dispose()
    # Redis lost every key (restarted empty): the database restores the ban at start
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=redis_prefix + "*"))
    assert keys
    r.delete(*keys)
    r.close()
    third = limits_app(**settings)
    resp = third.test_client().get("/actions/t_public")
    assert code(resp) == "banned" and 590 <= int(resp.headers["Retry-After"]) <= 600


def test_bans_survive_a_restart_without_redis(limits_app: Any) -> None:
    settings = {"RATE_LIMIT_IP": "1/minute", "BAN_AFTER_VIOLATIONS": 2}
    first = limits_app(**settings)
    client = first.test_client()
    assert [code(client.get("/actions/t_public")) for _ in range(3)] == ["ok", "rate_limited", "banned"]
    first.extensions["keel"].dispose()
    second = limits_app(**settings)
    assert code(second.test_client().get("/actions/t_public")) == "banned"


def test_admin_actions_ban_list_and_lift_take_effect_at_once_on_every_worker(
    limits_app: Any, redis_config: dict[str, Any]
) -> None:
    shared = {"JWT_SECRET_KEY": "limits-test-key-" + "k" * 32, **redis_config}
    worker_a = limits_app(**shared)
    worker_b = limits_app(**shared)  # a second worker: same Redis, database and JWT key
    client_a, client_b = worker_a.test_client(), worker_b.test_client()
    target = {"kind": "ip", "identifier": "198.51.100.7", "seconds": 120}
    assert client_a.post("/actions/ban", json=target, **ADMIN_IP).status_code == 401
    token = {"Authorization": f"Bearer {user_token(worker_a, 'boss', admin=True)}"}
    resp = client_a.post("/actions/ban", json=target, headers=token, **ADMIN_IP)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["result"]["seconds"] == 120
    assert code(client_b.get("/actions/t_public", **from_ip("198.51.100.7"))) == "banned"
    resp = client_b.get("/actions/list_bans", headers=token, **ADMIN_IP)
    assert resp.status_code == 200, resp.get_json()
    listed = resp.get_json()["result"]
    assert [(b["kind"], b["identifier"], b["actor"]) for b in listed] == [("ip", "198.51.100.7", "user:1")]
    lift = {"kind": "ip", "identifier": "198.51.100.7"}
    resp = client_a.post("/actions/lift_ban", json=lift, headers=token, **ADMIN_IP)
    assert resp.get_json()["result"]["lifted"] is True
    assert code(client_b.get("/actions/t_public", **from_ip("198.51.100.7"))) == "ok"
    resp = client_a.post("/actions/lift_ban", json=lift, headers=token, **ADMIN_IP)
    assert resp.status_code == 404
    bad = client_a.post("/actions/ban", json={**target, "kind": "planet"}, headers=token, **ADMIN_IP)
    assert bad.status_code == 400
    bad = client_a.post("/actions/ban", json={**target, "identifier": "not-an-ip"}, headers=token, **ADMIN_IP)
    assert bad.status_code == 400 and bad.get_json()["error"]["details"][0]["param"] == "identifier"


def test_a_user_banned_by_username_is_banned_by_id(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(**redis_config)
    limiter, client = app.extensions["keel"].limiter, app.test_client()
    token = {"Authorization": f"Bearer {user_token(app, 'mallory')}"}
    user_id = str(app.extensions["keel"].jwt.users.by_username("mallory").id)
    assert code(client.get("/actions/t_any", headers=token, **from_ip("198.51.100.9"))) == "ok"
    assert limiter.ban("user", " Mallory ", 300, actor="test")["identifier"] == user_id
    assert code(client.get("/actions/t_any", headers=token, **from_ip("198.51.100.9"))) == "banned"
    assert limiter.lift_ban("user", "mallory")["identifier"] == user_id
    assert code(client.get("/actions/t_any", headers=token, **from_ip("198.51.100.9"))) == "ok"
    try:
        limiter.ban("user", "nobody-by-that-name", 300)
    except ValidationError as exc:
        assert "no user 'nobody-by-that-name'" in exc.details[0]["message"]
    else:
        raise AssertionError("a ban of an unknown username was accepted")
    assert limiter.bans.active() == []


def test_cli_lists_and_lifts(limits_app: Any, redis_config: dict[str, Any]) -> None:
    app = limits_app(**redis_config)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["bans", "list"]).output.strip() == "no active bans"
    app.extensions["keel"].limiter.ban("user", "42", 300, actor="test")
    out = runner.invoke(args=["bans", "list"]).output
    assert "user" in out and "42" in out and "reason=manual" in out
    assert code(app.test_client().get("/actions/t_public")) == "ok"
    result = runner.invoke(args=["bans", "lift", "user", "42"])
    assert result.exit_code == 0 and "lifted" in result.output
    assert app.extensions["keel"].limiter.ban_remaining("user", "42") is None
    result = runner.invoke(args=["bans", "lift", "user", "42"])
    assert result.exit_code != 0 and "no active ban" in result.output
    assert runner.invoke(args=["bans", "lift", "planet", "x"]).exit_code != 0


def test_without_redis_workers_share_bans_and_lifts_through_the_database(limits_app: Any) -> None:
    worker_a, worker_b = limits_app(), limits_app()  # same database, no Redis
    client_b = worker_b.test_client()
    assert code(client_b.get("/actions/t_public", **from_ip("198.51.100.8"))) == "ok"
    worker_a.extensions["keel"].limiter.ban("ip", "198.51.100.8", 60, actor="test")
    wait = time.monotonic()
    while code(client_b.get("/actions/t_public", **from_ip("198.51.100.8"))) != "banned":
        assert time.monotonic() - wait < 3, "worker B never saw the ban"
        time.sleep(0.1)
    result = worker_a.test_cli_runner().invoke(args=["bans", "lift", "ip", "198.51.100.8"])
    assert result.exit_code == 0
    wait = time.monotonic()
    while code(client_b.get("/actions/t_public", **from_ip("198.51.100.8"))) != "ok":
        assert time.monotonic() - wait < 3, "worker B never saw the lift"
        time.sleep(0.1)
