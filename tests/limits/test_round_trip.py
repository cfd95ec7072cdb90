"""One Redis round trip per authenticated, rate-limited action request (counted by the server:
MONITOR shows every command a client sends; commands run inside the script are marked lua)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import redis

from tests.limits.conftest import api_key, owned_key, user_token

STOP = "keel-stop-monitor"
SETUP = {"HELLO", "CLIENT", "SELECT"}  # a new connection's handshake (the watcher's own one)


def client_commands(url: str, work: Any) -> Counter[str]:
    """The commands clients sent to the server while ``work()`` ran (not those run by scripts)."""
    seen: Counter[str] = Counter()
    ready = threading.Event()
    r = redis.Redis.from_url(url)

    def watch() -> None:
        with r.monitor() as m:
            ready.set()
            for cmd in m.listen():
                if STOP in cmd["command"]:
                    return
                name = cmd["command"].split()[0].upper()
                if cmd.get("client_type") != "lua" and name not in SETUP:
                    seen[name] += 1

    t = threading.Thread(target=watch)
    t.start()
    ready.wait(5)
    try:
        work()
    finally:
        r.echo(STOP)
        t.join(10)
        r.close()
    return seen


def test_one_command_per_request(limits_app: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = limits_app(action_limit="1000/minute", REDIS_URL=server.url)
    client = app.test_client()
    user = {"Authorization": f"Bearer {user_token(app, 'counted')}"}
    key = {"X-API-Key": api_key(app)}
    owned = {"X-API-Key": owned_key(app, "keyowner")}  # its owner's buckets and bans too
    for headers in (user, key, owned):  # warm up: script cached, API key record cached
        for _ in range(3):
            assert client.get("/actions/t_limited", headers=headers).status_code == 200

    for path, headers in (("t_limited", user), ("t_limited", key), ("t_limited", owned), ("t_open_limited", {})):

        def work(path: str = path, headers: dict[str, str] = headers) -> None:
            for _ in range(20):
                assert client.get(f"/actions/{path}", headers=headers).status_code == 200

        seen = client_commands(server.url, work)
        assert seen == {"EVALSHA": 20}, (list(headers), seen)


def test_an_exempt_client_costs_one_command_at_most(limits_app: Any, redis_server_factory: Any) -> None:
    """``BAN_EXEMPT_NETWORKS`` (loopback by default under APP_ENV=test): no limit is counted,
    but a credential's bans and deny-list keys are still read, in the one command."""
    server = redis_server_factory()
    app = limits_app(action_limit="1000/minute", REDIS_URL=server.url, BAN_EXEMPT_NETWORKS=None)
    client = app.test_client()
    user = {"Authorization": f"Bearer {user_token(app, 'exempt')}"}
    owned = {"X-API-Key": owned_key(app, "exemptowner")}
    for headers in (user, owned):
        for _ in range(3):
            assert client.get("/actions/t_limited", headers=headers).status_code == 200

    cases = (("t_limited", user, {"EVALSHA": 20}), ("t_limited", owned, {"EVALSHA": 20}), ("t_open_limited", {}, {}))
    for path, headers, expected in cases:

        def work(path: str = path, headers: dict[str, str] = headers) -> None:
            for _ in range(20):
                resp = client.get(f"/actions/{path}", headers=headers)
                assert resp.status_code == 200 and "X-RateLimit-Limit" not in resp.headers

        assert client_commands(server.url, work) == expected, list(headers)
