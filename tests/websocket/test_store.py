"""The room store: the Redis store and its in-process twin follow the same rules; the Redis
store's heartbeats take back the memberships of a process that died."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import ServiceUnavailable
from core.websocket.redis_store import RedisRoomStore
from core.websocket.store import MemoryRoomStore, RoomMeta

ANN = {"user_id": 1, "username": "ann"}
BEN = {"user_id": 2, "username": "ben"}


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, make_app: Callable[..., Any]) -> Callable[..., Any]:
    """``make_store(node)``: stores of one cluster (one shared Redis prefix, or one process)."""
    if request.param == "memory":
        store = MemoryRoomStore()
        return lambda node="a", **kw: store
    app = make_app(**request.getfixturevalue("redis_config"))
    am = app.extensions["keel"]
    return lambda node="a", **kw: RedisRoomStore(am.redis, node, kw.get("ttl", 15.0))


def test_membership_counts_connections_and_members(make_store: Callable[..., Any]) -> None:
    store = make_store()
    first = store.join("r", "user:1", ANN, True)
    assert (first.status, first.first, first.members) == ("ok", True, [ANN])
    assert store.join("r", "user:1", ANN, True).first is False  # a second connection of ann
    assert store.join("r", "user:2", BEN, True).members == [ANN, BEN]
    assert store.leave("r", "user:1") is None  # ann still has a connection
    assert store.members("r", None).members == [ANN, BEN]
    assert store.leave("r", "user:1") == ANN  # her last: she left
    assert store.rooms("user:9") == [{"room": "r", "private": False, "members": 1, "max_members": None}]
    assert store.leave("r", "user:2") == BEN
    assert store.members("r", None).status == "not_found"  # a room made by joining goes with its last member
    assert store.rooms("user:9") == []
    assert store.leave("r", "user:2") is None  # leaving twice changes nothing


def test_created_rooms_private_full_and_unknown(make_store: Callable[..., Any]) -> None:
    store = make_store()
    assert store.create("club", RoomMeta(True, 2, False), ["user:1", "user:2"]) is True
    assert store.create("club", RoomMeta(False, 0, False), []) is False
    assert store.rooms("user:3") == []  # private: not visible to strangers
    assert store.rooms("user:1") == [{"room": "club", "private": True, "members": 0, "max_members": 2}]
    assert store.join("club", "user:3", {"user_id": 3, "username": "cy"}, True).status == "forbidden"
    assert store.members("club", "user:3").status == "forbidden"
    assert store.join("club", "user:1", ANN, True).status == "ok"
    assert store.join("club", "user:2", BEN, True).status == "ok"
    store.create("pair", RoomMeta(False, 1, False), [])
    assert store.join("pair", "user:1", ANN, True).status == "ok"
    assert store.join("pair", "user:2", BEN, True).status == "full"
    assert store.join("pair", "user:1", ANN, True).status == "ok"  # a member's second connection fits
    assert store.leave("club", "user:1") == ANN and store.leave("club", "user:2") == BEN
    assert store.members("club", "user:1").status == "ok"  # a created room outlives being empty
    assert store.join("ghost", "user:1", ANN, False).status == "not_found"


def test_an_empty_created_room_expires() -> None:
    store = MemoryRoomStore(empty_ttl=0.05)
    store.create("brief", RoomMeta(False, 0, False), [])
    time.sleep(0.1)
    assert store.members("brief", None).status == "not_found"
    assert store.create("brief", RoomMeta(False, 0, False), []) is True


def test_a_dead_process_members_are_swept(make_app: Callable[..., Any], redis_config: dict[str, Any]) -> None:
    am = make_app(**redis_config).extensions["keel"]
    alive = RedisRoomStore(am.redis, "alive", 15.0)
    dead = RedisRoomStore(am.redis, "dead", 15.0)
    assert alive.heartbeat() is True and alive.heartbeat() is False  # registered once
    assert dead.heartbeat() is True
    alive.join("r", "user:1", ANN, True)
    dead.join("r", "user:1", ANN, True)  # ann on both processes
    dead.join("r", "user:2", BEN, True)
    dead.join("solo", "user:2", BEN, True)
    assert alive.sweep() == []  # nobody is late
    am.redis.client.zadd(am.redis.key("ws", "nodes"), {"dead": 0})  # its last beat: long ago
    assert sorted(alive.sweep()) == sorted([("r", BEN), ("solo", BEN)])  # ann is still on "alive"
    assert alive.members("r", None).members == [ANN]
    assert alive.members("solo", None).status == "not_found"
    assert alive.sweep() == []
    # the "dead" process was only slow: its next beat finds it forgotten, so it joins again
    assert dead.heartbeat() is True
    assert dead.leave("r", "user:2") is None  # its swept memberships count nothing
    assert alive.members("r", None).members == [ANN]
    alive.forget_node()
    assert alive.members("r", None).status == "not_found"


def test_redis_down_is_service_unavailable(make_app: Callable[..., Any], redis_server_factory: Any) -> None:
    server = redis_server_factory()
    am = make_app(REDIS_URL=server.url, BREAKER_THRESHOLD=1).extensions["keel"]
    store = am.websocket.rooms.store
    assert isinstance(store, RedisRoomStore)
    assert store.join("r", "user:1", ANN, True).status == "ok"
    server.stop()
    with pytest.raises(ServiceUnavailable):
        store.join("r", "user:2", BEN, True)
    with pytest.raises(ServiceUnavailable):
        store.sweep()
