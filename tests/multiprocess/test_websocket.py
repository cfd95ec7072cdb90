"""Socket.IO across two instances (gunicorn, 2 gevent workers each) sharing PostgreSQL and Redis:
emits, membership, forced disconnects and the presence of a crashed instance are cluster-wide."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.multiprocess.conftest import Cluster, _run_cluster
from tests.websocket.conftest import Client, wait_until


@pytest.fixture(scope="module")
def ws_cluster(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[Cluster]:
    import redis

    url, prefix = redis_server_url.rstrip("/") + "/9", f"keeltest:mpws{uuid.uuid4().hex[:8]}:"
    try:
        with _run_cluster(tmp_path_factory.mktemp("multiprocess-ws"), (url, prefix), worker_class="gevent") as c:
            yield c
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def connect() -> Iterator[Any]:
    made: list[Client] = []

    def factory(url: str, token: str) -> Client:
        client = Client(url, {"token": token}).connect()
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


def test_a_message_on_a_reaches_b_and_both_see_the_same_members(ws_cluster: Cluster, connect: Any) -> None:
    ann, ben = ws_cluster.new_user(ip="192.0.2.61"), ws_cluster.new_user(ip="192.0.2.62")
    room = f"both-{uuid.uuid4().hex[:6]}"
    on_a = connect(ws_cluster.a.url, ann["token"])
    on_b = connect(ws_cluster.b.url, ben["token"])
    on_a.call("join_room", {"room": room})
    on_b.call("join_room", {"room": room})
    sent = on_a.call("room_message", {"room": room, "message": "across instances"})
    (received,) = on_b.wait_for("room_message")
    assert received["id"] == sent["id"] and received["from"]["username"] == ann["username"]
    from_a = on_a.call("room_members", {"room": room})["members"]
    from_b = on_b.call("room_members", {"room": room})["members"]
    assert from_a == from_b == sorted(
        [{"user_id": ann["id"], "username": ann["username"]}, {"user_id": ben["id"], "username": ben["username"]}],
        key=lambda m: m["user_id"],
    )
    rooms_a = {r["room"]: r["members"] for r in on_a.call("list_rooms")["rooms"]}
    rooms_b = {r["room"]: r["members"] for r in on_b.call("list_rooms")["rooms"]}
    assert rooms_a[room] == rooms_b[room] == 2


def test_revocation_on_a_drops_the_socket_on_b_within_5_seconds(ws_cluster: Cluster, connect: Any) -> None:
    ip = "192.0.2.63"
    cy = ws_cluster.new_user(ip=ip)
    on_b = connect(ws_cluster.b.url, cy["token"])
    assert on_b.call("list_rooms")["ok"]
    started = time.monotonic()
    resp = ws_cluster.a.request("POST", "/auth/logout-all", token=cy["token"], ip=ip)
    assert resp.status_code == 200, resp.text
    assert on_b.wait_for("force_disconnect", timeout=5) == [{"reason": "tokens_revoked"}]
    on_b.wait_for("disconnect", timeout=5)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_killing_b_removes_its_members_within_30_seconds(ws_cluster: Cluster, connect: Any) -> None:
    """Last in this module: it kills instance B."""
    stays, goes = ws_cluster.new_user(ip="192.0.2.64"), ws_cluster.new_user(ip="192.0.2.65")
    room = f"crash-{uuid.uuid4().hex[:6]}"
    on_a = connect(ws_cluster.a.url, stays["token"])
    on_b = connect(ws_cluster.b.url, goes["token"])
    on_a.call("join_room", {"room": room})
    on_b.call("join_room", {"room": room})
    assert len(on_a.call("room_members", {"room": room})["members"]) == 2
    assert ws_cluster.b.proc is not None
    for pid in [*ws_cluster.b.workers(), ws_cluster.b.proc.pid]:
        os.kill(pid, signal.SIGKILL)  # no shutdown: its members stay in Redis until swept
    ws_cluster.b.proc.wait(10)
    killed = time.monotonic()
    wait_until(lambda: len(on_a.call("room_members", {"room": room})["members"]) == 1, timeout=30, interval=0.5)
    assert time.monotonic() - killed < 30
    left = on_a.wait_for("presence", timeout=5)
    assert left[-1] == {"room": room, "user": {"user_id": goes["id"], "username": goes["username"]}, "status": "left"}
