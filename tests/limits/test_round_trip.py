"""One Redis round trip per authenticated, rate-limited action request (counted by the server:
MONITOR shows every command a client sends; commands run inside the script are marked lua)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import redis

from tests.limits.conftest import api_key, user_token

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
    for headers in (user, key):  # warm up: script cached, API key record cached
        for _ in range(3):
            assert client.get("/actions/t_limited", headers=headers).status_code == 200

    for path, headers in (("t_limited", user), ("t_limited", key), ("t_open_limited", {})):

        def work(path: str = path, headers: dict[str, str] = headers) -> None:
            for _ in range(20):
                assert client.get(f"/actions/{path}", headers=headers).status_code == 200

        seen = client_commands(server.url, work)
        assert seen == {"EVALSHA": 20}, (list(headers), seen)
