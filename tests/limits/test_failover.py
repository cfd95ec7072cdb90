"""Redis dying under load: never a 5xx, the documented fallback, back on Redis within 2 s;
closed mode answers 503; a hung Redis costs a request at most about the socket timeout."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from typing import Any

import redis

NO_BANS = {"BAN_AFTER_VIOLATIONS": 1_000_000}


class Load:
    """Threads calling an action in a loop, recording statuses and the slowest call."""

    def __init__(self, app: Any, threads: int = 3) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()
        self.slowest = 0.0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, i: int) -> None:
        client = self.app.test_client()
        while not self.stop.is_set():
            started = time.perf_counter()
            status = client.get("/actions/t_public", environ_base={"REMOTE_ADDR": f"192.0.2.{i}"}).status_code
            elapsed = time.perf_counter() - started
            with self.lock:
                self.statuses[status] += 1
                self.slowest = max(self.slowest, elapsed)
            time.sleep(0.002)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def wait_for(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_redis_killed_under_load_open_mode(limits_app: Any, redis_server_factory: Any, caplog: Any) -> None:
    server = redis_server_factory()
    app = limits_app(action_limit="3/minute", REDIS_URL=server.url, RATE_LIMIT_IP="100000/minute", **NO_BANS)
    limiter = app.extensions["keel"].limiter
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="core.managers.rate_limit"), Load(app) as load:
        time.sleep(0.3)
        assert limiter.using_redis and load.statuses[200] > 0
        server.stop()
        wait_for(lambda: not limiter.using_redis, 2)
        assert limiter.health()["status"] == "degraded" and limiter.health()["fallback"] == "in-process"
        # the per-process store still enforces limits while Redis is away
        got = [
            client.get("/actions/t_open_limited", environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code
            for _ in range(4)
        ]
        assert got == [200, 200, 200, 429]
        time.sleep(1.5)
        server.start()
        back_after = wait_for(lambda: limiter.using_redis, 2.5)
        time.sleep(0.2)
    assert back_after <= 2.0, back_after
    assert limiter.health()["status"] == "healthy"
    assert set(load.statuses) == {200}, load.statuses  # no 5xx, no 429 at this rate
    assert load.slowest < 0.5, load.slowest
    warnings = [r for r in caplog.records if r.name == "core.managers.rate_limit" and "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # one warning per outage, not one per request
    # the new Redis holds the limiter's keys again
    keys = redis.Redis.from_url(server.url).keys("*rl:ip:192.0.2.*")
    assert keys


def test_closed_mode_answers_503_then_recovers(limits_app: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = limits_app(REDIS_URL=server.url, RATE_LIMIT_FAIL_MODE="closed", **NO_BANS)
    client = app.test_client()
    assert client.get("/actions/t_public").status_code == 200
    server.stop()
    for _ in range(5):
        resp = client.get("/actions/t_public")
        assert resp.status_code == 503, resp.get_json()
        assert resp.get_json()["error"]["code"] == "service_unavailable"
        assert resp.headers["Retry-After"] == "1"
    assert app.extensions["keel"].limiter.health()["status"] == "unhealthy"
    assert client.get("/healthz").status_code == 200  # probes are exempt
    server.start()
    wait_for(lambda: client.get("/actions/t_public").status_code == 200, 2.5)


def test_hung_redis_costs_at_most_the_socket_timeout(limits_app: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = limits_app(REDIS_URL=server.url, **NO_BANS)
    limiter = app.extensions["keel"].limiter
    client = app.test_client()
    assert client.get("/actions/t_public").status_code == 200
    server.proc.send_signal(signal.SIGSTOP)
    try:
        timings = []
        for _ in range(30):
            started = time.perf_counter()
            assert client.get("/actions/t_public").status_code == 200
            timings.append(time.perf_counter() - started)
        assert max(timings) < 0.5, timings  # 100 ms socket timeout (+ a busy CI machine)
        # only the first call (and at most one probe a second later) waited; the rest fell back
        assert sum(t > 0.09 for t in timings) <= 2, timings
        assert not limiter.using_redis
    finally:
        server.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: client.get("/actions/t_public").status_code == 200 and limiter.using_redis, 2.5)


def test_an_idle_process_gets_back_on_redis(limits_app: Any, redis_server_factory: Any) -> None:
    """No request and no /health call needed: the limiter's prober closes the circuit. The
    limiter uses the Redis manager's client settings and its breaker (one path to Redis)."""
    server = redis_server_factory()
    app = limits_app(REDIS_URL=server.url, **NO_BANS)
    am = app.extensions["keel"]
    assert am.limiter.store.redis.client is am.redis.client
    assert am.limiter.store.breaker is am.redis.breaker
    client = app.test_client()
    server.stop()
    assert client.get("/actions/t_public").status_code == 200  # the per-process store answers
    assert not am.limiter.using_redis and am.limiter.health()["status"] == "degraded"
    server.start()
    wait_for(lambda: am.limiter.using_redis, 2.5)
    assert am.limiter.health()["status"] == "healthy"


def test_health_reports_without_probing(limits_app: Any, redis_server_factory: Any, monkeypatch: Any) -> None:
    server = redis_server_factory()
    app = limits_app(REDIS_URL=server.url, **NO_BANS)
    am = app.extensions["keel"]
    server.stop()
    assert app.test_client().get("/actions/t_public").status_code == 200
    breaker = am.redis.breaker
    callers: list[tuple[str, threading.Thread]] = []

    def spy(name: str) -> Any:
        original = getattr(breaker, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            callers.append((name, threading.current_thread()))
            return original(*args, **kwargs)

        return wrapper

    for name in ("allow", "check", "success", "failure"):
        monkeypatch.setattr(breaker, name, spy(name))
    time.sleep(breaker.probe_interval + 0.1)  # a probe is due (or the prober took it)
    for _ in range(3):
        assert am.limiter.health()["status"] == "degraded"
    assert [name for name, thread in callers if thread is threading.current_thread()] == []
