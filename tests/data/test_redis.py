"""RedisManager: JSON cache helpers, pub/sub, the in-process stand-in, and outages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def _wait(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_cache_helpers_store_json_under_the_prefix(redis_app: Any) -> None:
    r = redis_app.extensions["keel"].redis
    assert r.cache_get("k") is None and r.cache_get("k", default=0) == 0
    assert r.cache_set("k", {"a": [1, 2], "b": None}, ttl=60)
    assert r.cache_get("k") == {"a": [1, 2], "b": None}
    assert r.cache_delete("k") and r.cache_get("k") is None
    assert r.key("a", "b") == r.prefix + "a:b"
    if r.client is not None:  # the real key carries the prefix
        r.cache_set("p", 1, ttl=60)
        assert r.client.get(r.prefix + "p") == b"1"
        assert 0 < r.client.ttl(r.prefix + "p") <= 60


def test_cache_entries_expire(redis_app: Any) -> None:
    r = redis_app.extensions["keel"].redis
    r.cache_set("short", "v", ttl=1)
    assert r.cache_get("short") == "v"
    assert _wait(lambda: r.cache_get("short") is None, 2.5)


def test_set_if_newer_never_goes_back(redis_app: Any) -> None:
    r = redis_app.extensions["keel"].redis
    assert r.cache_set_if_newer("rec", {"v": "two"}, 2, ttl=60)
    r.cache_set_if_newer("rec", {"v": "one"}, 1, ttl=60)
    assert r.cache_get("rec") == {"v": "two", "version": 2}
    r.cache_set_if_newer("rec", {"v": "three"}, 3, ttl=60)
    assert r.cache_get("rec")["v"] == "three"


def test_publish_subscribe(redis_app: Any) -> None:
    r = redis_app.extensions["keel"].redis
    got: list[Any] = []
    sub = r.subscribe("chan", got.append)
    assert _wait(lambda: sub.connected)
    assert r.publish("chan", {"hello": "world"})
    assert _wait(lambda: got == [{"hello": "world"}])
    sub.close()


def test_subscriber_exceptions_do_not_end_the_subscription(redis_app: Any) -> None:
    r = redis_app.extensions["keel"].redis
    got: list[Any] = []

    def callback(message: Any) -> None:
        if message == "bad":
            raise ValueError("subscriber bug")
        got.append(message)

    sub = r.subscribe("c2", callback)
    assert _wait(lambda: sub.connected)
    r.publish("c2", "bad")
    r.publish("c2", "good")
    assert _wait(lambda: got == ["good"])


def test_health_reports_backend_and_latency(redis_app: Any) -> None:
    report = redis_app.test_client().get("/health").get_json()["managers"]["redis"]
    assert report["status"] == "healthy"
    if redis_app.extensions["keel"].redis.client is not None:
        assert report["backend"] == "redis" and report["latency_ms"] >= 0 and report["breaker"]["state"] == "closed"
    else:
        assert report["backend"] == "in-process"


def test_redis_outage_fails_fast_and_recovers(
    make_app: Callable[..., Any], redis_server_factory: Callable[[], Any]
) -> None:
    server = redis_server_factory()
    app = make_app(REDIS_URL=server.url, REDIS_KEY_PREFIX="keeltest:outage:")
    r = app.extensions["keel"].redis
    got: list[Any] = []
    sub = r.subscribe("events", got.append)
    assert _wait(lambda: sub.connected)
    first_generation = sub.generation
    r.cache_set("k", 1, ttl=60)

    server.stop()
    assert r.cache_get("k") is None  # a miss, not an exception
    assert r.cache_set("k", 2, ttl=60) is False
    assert r.publish("events", "lost") is False
    assert r.breaker.state == "open"
    started = time.perf_counter()
    for _ in range(100):
        r.cache_get("k")
    assert time.perf_counter() - started < 0.5  # fail fast: no connection attempts while open
    health = app.test_client().get("/health").get_json()
    assert health["managers"]["redis"]["status"] == "degraded"
    assert health["managers"]["redis"]["breaker"]["state"] in ("open", "half_open")

    server.start()
    assert _wait(lambda: r.cache_set("k", 3, ttl=60), 5)  # a probe within a second closes it
    assert r.cache_get("k") == 3 and r.breaker.state == "closed"
    assert _wait(lambda: sub.connected and sub.generation > first_generation, 5)
    r.publish("events", "back")
    assert _wait(lambda: got == ["back"])


def test_in_process_store_is_thread_safe(make_app: Callable[..., Any]) -> None:
    r = make_app().extensions["keel"].redis
    assert r.client is None

    def work(i: int) -> None:
        for n in range(200):
            r.cache_set_if_newer("x", {"i": i}, n, ttl=60)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.cache_get("x")["version"] == 199


def test_health_reads_the_breaker_and_never_changes_it(
    make_app: Callable[..., Any], redis_config: dict[str, Any]
) -> None:
    r = make_app(**redis_config).extensions["keel"].redis
    r.breaker.failure()  # below the threshold
    assert r.health()["status"] == "healthy"
    assert r.breaker.health()["consecutive_failures"] == 1  # the ping went around the breaker
    for _ in range(r.breaker.threshold):
        r.breaker.failure()
    for _ in range(3):
        report = r.health()
        assert report["status"] == "degraded" and report["error"] == "CircuitOpen"
        assert r.breaker.state == "open"


def test_an_open_circuit_closes_without_requests(make_app: Callable[..., Any], redis_config: dict[str, Any]) -> None:
    r = make_app(BREAKER_PROBE_INTERVAL=0.1, **redis_config).extensions["keel"].redis
    for _ in range(r.breaker.threshold):
        r.breaker.failure()
    assert r.breaker.state == "open"
    assert _wait(lambda: r.breaker.state == "closed")  # the background probe found Redis answering


def test_subscriptions_start_with_the_manager(make_app: Callable[..., Any], redis_config: dict[str, Any]) -> None:
    from flask import Flask

    from core.managers.redis import RedisManager

    am = make_app(**redis_config).extensions["keel"]
    manager = RedisManager()
    manager.init_app(Flask("declared-only"), am)
    sub = manager.subscribe("declared", lambda message: None)
    try:
        time.sleep(0.3)
        assert not sub.connected and sub.generation == 0  # init_app declares: no thread yet
        manager.start()
        assert _wait(lambda: sub.connected)
        late = manager.subscribe("late", lambda message: None)
        assert _wait(lambda: late.connected)  # after start: at once
    finally:
        manager.dispose()
        manager.dispose()  # idempotent
