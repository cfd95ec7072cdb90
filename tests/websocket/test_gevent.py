"""The production setup: python-socketio clients against the app under gunicorn with 2 gevent
workers and Redis (SPEC §8). Clients land on either worker; rooms, presence and emits are
shared through Redis."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import threading
import time
import uuid
from typing import Any

import pytest
import requests
import socketio
import websocket

from tests.auth.test_hostile_tokens import build_corpus
from tests.websocket.conftest import WsServer, wait_until


def handled(metrics: dict[str, float]) -> float:
    """Client events that reached a handler (any event, any outcome)."""
    return sum(v for k, v in metrics.items() if k.startswith("keel_ws_events_total"))


def accepted(metrics: dict[str, float]) -> float:
    return metrics.get('keel_ws_connects_total{outcome="accepted"}', 0.0)


def corpus_auth(headers: dict[str, str]) -> dict[str, Any] | None:
    """The Socket.IO ``auth`` of a hostile-corpus entry (``None``: the entry is about HTTP
    header syntax and has no Socket.IO form)."""
    value = headers.get("Authorization", "")
    if "X-API-Key" in headers:
        return {"token": value.partition(" ")[2], "api_key": headers["X-API-Key"]}
    if value.startswith("Bearer "):
        return {"token": value[len("Bearer "):]}
    return None


def test_hostile_credentials_are_refused_and_run_no_handler(ws_server: WsServer, clients: Any) -> None:
    twin = ws_server.twin
    good, corpus = build_corpus(twin, twin.test_client())
    ok = clients(ws_server.url, {"token": good})  # the unmodified token is accepted
    assert ok.call("list_rooms")["ok"]
    ok.close()
    before = ws_server.metrics()
    tried = 0
    for name, headers in corpus.items():
        auth = corpus_auth(headers)
        if auth is None:
            continue
        tried += 1
        refusal = clients(ws_server.url, auth, connect=False).try_connect()
        if name == "1 MB token":  # over the frame limit: the transport is closed before parsing
            assert refusal is None
        else:
            assert refusal is not None and refusal["code"] == "unauthorized", (name, refusal)
    assert tried >= 70
    for auth in (None, {}, {"token": None}, {"token": 7}, {"api_key": good}, {"user_id": 1}, {"token": ""}):
        assert clients(ws_server.url, auth, connect=False).try_connect()["code"] == "unauthorized", auth

    # A raw client that ignores the refusal and sends events anyway: none is handled.
    raw = websocket.create_connection(ws_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    assert raw.recv().startswith("0{")
    raw.send('40{"token": "forged"}')
    assert json.loads(raw.recv()[2:])["code"] == "unauthorized"
    raw.send('420["create_room",{"room":"pwned"}]')
    raw.send('421["list_rooms"]')
    raw.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        print(raw.recv())
    raw.close()

    after = ws_server.metrics()
    assert handled(after) == handled(before) and accepted(after) == accepted(before)
    assert ws_server.am.websocket.room_members("pwned") == []
    assert ws_server.am.websocket.rooms.store.members("pwned", None).status == "not_found"


# A refused client connection's socket is sometimes left to the garbage collector by the client
# libraries (python-socketio / websocket-client: the server closed it first; this process holds
# no server socket): its ResourceWarning is not a Keel leak. Seen in 2 of 4 full runs.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_refusals_for_revoked_banned_and_foreign_origin(ws_server: WsServer, clients: Any) -> None:
    am = ws_server.am
    revoked, banned, ok = ws_server.user(), ws_server.user(), ws_server.user()
    am.jwt.logout(am.jwt.decode(revoked["token"], "access"))
    am.limiter.ban("user", str(banned["id"]), 600)
    assert clients(ws_server.url, {"token": revoked["token"]}, connect=False).try_connect()["code"] == "unauthorized"
    refusal = clients(ws_server.url, {"token": banned["token"]}, connect=False).try_connect()
    assert refusal["code"] == "banned" and refusal["data"] == {"code": "banned", "message": refusal["message"],
                                                               "retry_after": refusal["retry_after"]}
    ip = "198.51.100.77"
    am.limiter.ban("ip", ip, 600)
    headers = {"X-Forwarded-For": ip}
    refused = clients(ws_server.url, {"token": ok["token"]}, headers=headers, connect=False).try_connect()
    assert refused["code"] == "banned"
    # A WebSocket handshake from a foreign page (sent with requests, whose session closes its
    # socket: websocket-client leaves a refused handshake's socket to the garbage collector).
    handshake = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "https://evil.example"}
    with requests.Session() as http:
        bad = http.get(ws_server.url + "/socket.io/?EIO=4&transport=websocket", headers=handshake, timeout=5)
        assert bad.status_code == 400
        long_poll = http.get(ws_server.url + "/socket.io/?EIO=4&transport=polling", timeout=5)
        assert long_poll.status_code == 400  # WebSocket transport only (WS_LONG_POLLING=false)


def test_private_rooms(ws_server: WsServer, clients: Any) -> None:
    owner, guest, stranger = ws_server.user(), ws_server.user(), ws_server.user()
    room = f"private-{uuid.uuid4().hex[:8]}"
    o = clients(ws_server.url, {"token": owner["token"]})
    g = clients(ws_server.url, {"token": guest["token"]})
    s = clients(ws_server.url, {"token": stranger["token"]})
    assert o.call("create_room", {"room": room, "private": True, "members": [guest["id"]]})["ok"]
    assert s.call("join_room", {"room": room})["error"]["code"] == "forbidden"
    assert s.call("room_members", {"room": room})["error"]["code"] == "forbidden"
    assert s.call("room_message", {"room": room, "message": "let me in"})["error"]["code"] == "forbidden"
    assert room not in [r["room"] for r in s.call("list_rooms")["rooms"]]
    assert g.call("join_room", {"room": room})["ok"]
    sent = g.call("room_message", {"room": room, "message": "for us"})
    assert o.wait_for("room_message")[0]["id"] == sent["id"]
    time.sleep(0.3)
    assert "room_message" not in s.events and "presence" not in s.events


def test_multi_device_presence_across_workers(ws_server: WsServer, clients: Any) -> None:
    watcher, ada = ws_server.user(), ws_server.user()
    second = ws_server.am.jwt.issue_pair(ws_server.am.jwt.users.get(ada["id"]))["access_token"]
    room = f"hall-{uuid.uuid4().hex[:8]}"
    w = clients(ws_server.url, {"token": watcher["token"]})
    w.call("join_room", {"room": room})
    devices = [clients(ws_server.url, {"token": t}) for t in (ada["token"], second, ada["token"])]
    for device in devices:
        assert device.call("join_room", {"room": room})["ok"]
    members = [
        {"user_id": watcher["id"], "username": watcher["username"]},
        {"user_id": ada["id"], "username": ada["username"]},
    ]
    assert all(d.call("room_members", {"room": room})["members"] == members for d in devices)
    for device in devices[:-1]:
        device.close()
    time.sleep(0.3)
    assert [p["status"] for p in w.events["presence"]] == ["joined"]  # one member, however many devices
    devices[-1].close()
    presence = w.wait_for("presence", 2)
    assert [(p["user"]["user_id"], p["status"]) for p in presence] == [(ada["id"], "joined"), (ada["id"], "left")]
    assert ws_server.am.websocket.room_members(room) == members[:1]


async def exchange(url: str, tokens: list[str], rooms: list[str], per_client: int) -> list[list[Any]]:
    """100 python-socketio clients (asyncio: one thread for all) in ``rooms``; each sends
    ``per_client`` messages to its room; what each received."""
    received: list[list[Any]] = [[] for _ in range(100)]
    sios = [socketio.AsyncClient(reconnection=False) for _ in range(100)]

    async def join(i: int) -> None:
        async def on_message(data: Any) -> None:
            received[i].append(data)

        sios[i].on("room_message", on_message)
        await sios[i].connect(url, auth={"token": tokens[i // 10]}, transports=["websocket"], wait_timeout=10)
        assert (await sios[i].call("join_room", {"room": rooms[i % 10]}, timeout=10))["ok"]

    for batch in range(0, 100, 20):
        await asyncio.gather(*(join(i) for i in range(batch, batch + 20)))

    async def send(i: int) -> None:
        """Each message waits for its acknowledgement: the clients send as fast as the server
        takes them, with no backlog that would starve the Engine.IO pings on a busy machine."""
        room = rooms[i % 10]
        for n in range(per_client):
            ack = await sios[i].call("room_message", {"room": room, "message": {"room": room, "n": n}}, timeout=60)
            assert ack["ok"], ack

    await asyncio.gather(*(send(i) for i in range(100)))
    expected = 10 * per_client  # what the room's 10 members sent
    deadline = time.monotonic() + 60
    while any(len(box) < expected for box in received) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for sio in sios:
        await sio.disconnect()
    return received


@pytest.mark.slow
# aiohttp (under python-socketio's asyncio client) may leave a socket of a connection attempt
# to the garbage collector; a client-side leak that is not what this test is about.
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
@pytest.mark.filterwarnings(r"ignore:Exception ignored in. <socket\.socket:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.timeout(300)
def test_100_clients_in_10_rooms_exchange_10000_messages_without_a_wrong_delivery(ws_server: WsServer) -> None:
    users = [ws_server.user() for _ in range(10)]  # 10 users with 10 connections each
    rooms = [f"iso-{i}-{uuid.uuid4().hex[:6]}" for i in range(10)]
    per_client = 100  # 100 clients x 100 = 10,000 messages; 100,000 deliveries
    received = asyncio.run(exchange(ws_server.url, [u["token"] for u in users], rooms, per_client))
    wrong = [(rooms[i % 10], m) for i, box in enumerate(received) for m in box
             if m["room"] != rooms[i % 10] or m["message"]["room"] != rooms[i % 10]]
    assert wrong == []
    assert [len(box) for box in received] == [10 * per_client] * 100  # and none lost


@pytest.mark.slow
def test_a_flooding_client_is_capped_then_dropped_while_others_keep_their_latency(
    ws_server: WsServer, clients: Any
) -> None:
    room = f"flood-{uuid.uuid4().hex[:6]}"
    speaker, listener, flooder = ws_server.user(), ws_server.user(), ws_server.user()
    s = clients(ws_server.url, {"token": speaker["token"]})
    listen = clients(ws_server.url, {"token": listener["token"]})
    f = clients(ws_server.url, {"token": flooder["token"]})
    for c in (s, listen, f):
        c.call("join_room", {"room": room})

    def latency_ms(count: int) -> float:
        samples = []
        for n in range(count):
            started = time.perf_counter()
            s.call("room_message", {"room": room, "message": f"ping {n}"})
            samples.append((time.perf_counter() - started) * 1e3)
            time.sleep(0.01)
        return statistics.median(samples)

    baseline = latency_ms(30)
    before = ws_server.metrics()
    stop = threading.Event()

    def flood() -> None:  # 1,000 events per second until the server drops the connection
        n = 0
        while not stop.is_set() and f.sio.connected and n < 5000:
            try:
                f.sio.emit("room_message", {"room": room, "message": "x" * 100})
            except socketio.exceptions.SocketIOError:  # the server closed the connection mid-flood
                break
            n += 1
            time.sleep(0.001)

    flooding = threading.Thread(target=flood)
    flood_started = time.monotonic()
    flooding.start()
    during = latency_ms(30)
    f.wait_for("force_disconnect", timeout=15)
    flood_seconds = time.monotonic() - flood_started
    stop.set()
    flooding.join(10)
    assert f.events["force_disconnect"] == [{"reason": "banned"}]
    assert {e["code"] for e in f.events["error"]} >= {"rate_limited"}
    delivered = ws_server.metrics()['keel_ws_events_total{event="room_message",outcome="ok"}'] - \
        before['keel_ws_events_total{event="room_message",outcome="ok"}']
    # The flooder's 200/second for as long as it flooded (banned within about a second on a quiet
    # machine; a loaded one takes longer to count the violations), the speaker's 30, a margin.
    assert delivered <= 200 * (math.ceil(flood_seconds) + 1) + 30 + 5, (delivered, flood_seconds)
    assert during <= max(2 * baseline, baseline + 10), (baseline, during)
    refusal = clients(ws_server.url, {"token": flooder["token"]}, connect=False).try_connect()
    assert refusal["code"] == "banned"
    wait_until(lambda: [p for p in listen.events["presence"] if p["status"] == "left"])
