"""The state caches: Redis write-through, the in-process cache and its pub/sub invalidation,
and Redis outages (writes still reach the database)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from core.errors import VersionConflict

GRAPH = {"todo": ["doing"], "doing": ["todo", "done"], "done": []}


def _state(app: Any) -> Any:
    state = app.extensions["keel"].state
    state.define("job", GRAPH, initial="todo")
    return state


def _wait(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _wait_subscribed(app: Any) -> None:
    sub = app.extensions["keel"].state.cache.subscription
    assert _wait(lambda: sub is not None and sub.connected), "state subscription never connected"


def _sneak_update(app: Any, key: str) -> None:
    """Change a row's data behind the StateManager's back (to see which layer answers)."""
    with app.extensions["keel"].db.sql.begin() as conn:
        conn.execute(
            sa.text("UPDATE keel_state SET data = :d WHERE record_key = :k"), {"d": '{"sneaky":true}', "k": key}
        )


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_reads_are_cached_and_invalidated_across_instances(
    request: pytest.FixtureRequest, make_app: Callable[..., Any], redis_config: dict[str, Any], db: str
) -> None:
    config = {**redis_config, **(request.getfixturevalue("pg_config") if db == "postgresql" else {})}
    app1, app2 = make_app(**config), make_app(**config)  # two "workers": same DB, same Redis
    s1, s2 = _state(app1), _state(app2)
    _wait_subscribed(app1)
    _wait_subscribed(app2)
    s1.create("job", "c")
    assert s2.get("job", "c")["version"] == 1

    _sneak_update(app1, "c")  # invisible: worker 2 answers from its caches
    assert s2.get("job", "c")["data"] == {}

    s1.transition("job", "c", "doing")  # worker 1 writes through Redis and publishes
    assert _wait(lambda: s2.get("job", "c")["version"] == 2)
    assert s2.get("job", "c")["state"] == "doing"
    redis_copy = app2.extensions["keel"].redis.cache_get("state:job:c")
    assert redis_copy["version"] == 2


def test_two_instances_sixteen_writers_lose_nothing(
    make_app: Callable[..., Any], pg_config: dict[str, Any], redis_config: dict[str, Any]
) -> None:
    """16 writers over two app instances (as two workers) on PostgreSQL + Redis."""
    apps = [make_app(**pg_config, **redis_config) for _ in range(2)]
    states = [_state(a) for a in apps]
    for a in apps:
        _wait_subscribed(a)
    states[0].create("job", "n", {"n": 0})
    per_thread, errors = 12, []

    def writer(i: int) -> None:
        sm, done = states[i % 2], 0
        try:
            while done < per_thread:
                cur = sm.get("job", "n")
                try:
                    sm.update("job", "n", {"n": cur["data"]["n"] + 1}, expected_version=cur["version"])
                except VersionConflict:
                    continue
                done += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for sm in states:
        assert _wait(lambda sm=sm: sm.get("job", "n")["data"]["n"] == 16 * per_thread)
    assert states[1].get("job", "n")["version"] == 1 + 16 * per_thread


def test_redis_down_writes_go_to_the_database(
    make_app: Callable[..., Any], redis_server_factory: Callable[[], Any], pg_config: dict[str, Any]
) -> None:
    server = redis_server_factory()
    app = make_app(**pg_config, REDIS_URL=server.url, REDIS_KEY_PREFIX="keeltest:down:")
    am = app.extensions["keel"]
    sm = _state(app)
    _wait_subscribed(app)
    sm.create("job", "r")
    sm.get("job", "r")

    server.stop()
    started = time.monotonic()
    moved = sm.transition("job", "r", "doing", actor="user:1")
    updated = sm.update("job", "r", {"x": 1})
    for _ in range(5):  # the breaker opens: later calls fail fast
        sm.get("job", "r")
    assert time.monotonic() - started < 5
    assert (moved["version"], updated["version"]) == (2, 3)
    with am.db.sql.connect() as conn:
        row = conn.execute(sa.text("SELECT state, version, data FROM keel_state WHERE record_key = 'r'")).one()
    assert (row[0], row[1]) == ("doing", 3) and '"x":1' in row[2]  # in the database, not only in memory
    assert sm.get("job", "r")["version"] == 3  # reads bypass the (unreachable) caches
    assert [h["to"] for h in sm.history("job", "r")] == ["todo", "doing"]

    client = app.test_client()
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert health["managers"]["redis"]["status"] == "degraded"
    assert health["managers"]["state"]["status"] == "degraded"

    server.start()  # same port, empty Redis
    assert _wait(lambda: client.get("/health").get_json()["managers"]["redis"]["status"] == "healthy", 5)
    sm.transition("job", "r", "done")
    assert am.redis.cache_get("state:job:r")["version"] == 4


def test_entries_missed_during_an_outage_are_dropped_when_redis_answers(
    make_app: Callable[..., Any], pg_config: dict[str, Any], redis_config: dict[str, Any]
) -> None:
    """Redis kept an old copy while this worker could not reach it: the copy must not be
    served once Redis answers again."""
    writer_app, reader_app = make_app(**pg_config, **redis_config), make_app(**pg_config, **redis_config)
    writer, reader = _state(writer_app), _state(reader_app)
    writer.create("job", "stale")
    assert writer_app.extensions["keel"].redis.cache_get("state:job:stale")["version"] == 1

    breaker = writer_app.extensions["keel"].redis.breaker
    for _ in range(breaker.threshold):
        breaker.failure()  # the writer's Redis link is "down"; Redis itself still holds version 1
    writer.transition("job", "stale", "doing")
    assert writer_app.extensions["keel"].state.health()["pending_invalidations"] == 1
    time.sleep(breaker.probe_interval + 0.05)
    writer.get("job", "stale")  # the next call probes Redis and drops the stale copy
    assert writer_app.extensions["keel"].state.health().get("pending_invalidations") is None
    reader_app.extensions["keel"].state.cache._local.clear()
    assert reader.get("job", "stale")["version"] == 2


def test_local_cache_is_bypassed_while_the_subscription_is_down(
    make_app: Callable[..., Any], redis_server_factory: Callable[[], Any]
) -> None:
    server = redis_server_factory()
    app = make_app(REDIS_URL=server.url, REDIS_KEY_PREFIX="keeltest:sub:")
    sm = _state(app)
    _wait_subscribed(app)
    sm.create("job", "l")
    sm.get("job", "l")
    server.stop()
    sub = app.extensions["keel"].state.cache.subscription
    assert _wait(lambda: not sub.connected)
    _sneak_update(app, "l")
    assert sm.get("job", "l")["data"] == {"sneaky": True}  # not the in-process copy: invalidations may be missed
    server.start()
    assert _wait(lambda: sub.connected, 5)
    assert sub.generation >= 2


@pytest.mark.parametrize("redis", ["in-process", "redis"])
def test_a_late_write_through_never_replaces_a_newer_record(
    request: pytest.FixtureRequest, make_app: Callable[..., Any], redis: str
) -> None:
    """The interleaving behind a once-flaky test: writer A commits v2 but is slow to cache it;
    writer B commits v3 and caches it; writer C loses a compare-and-set against v3; then A's
    write-through of v2 lands. A lost race must not erase what this process knows (v3)."""
    app = make_app(**(request.getfixturevalue("redis_config") if redis == "redis" else {}))
    sm = _state(app)
    _wait_subscribed(app)
    v1 = sm.create("job", "late")
    cache = sm.cache
    generation = cache.generation()
    v2 = {**v1, "state": "doing", "version": 2}
    v3 = {**v1, "state": "done", "version": 3}
    cache.store(v3, generation)  # B
    cache.newer_exists("job", "late", 3, generation)  # C lost against v3
    cache.store(v2, generation)  # A, late
    assert sm.get("job", "late")["version"] == 3
    cache.newer_exists("job", "late", 4, generation)  # another worker published v4
    cache.store(v3, generation)  # a late v3 again
    record, _ = cache.lookup("job", "late")
    assert record is None or record["version"] >= 4  # a tombstone: a miss, never v3
