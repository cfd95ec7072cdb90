"""Socket.IO events over real sockets against an app served in this process (SPEC §8).

python-socketio clients on the WebSocket transport; the server is Werkzeug's threaded server
(Flask-SocketIO's threading mode), without Redis unless a test asks ``live.redis()``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.auth.tokens import claims, raw_token
from tests.websocket.conftest import Client, handshake, wait_until

GENERIC = "Authentication required or credentials invalid."

# Werkzeug's development server hands the socket to simple-websocket and never closes it once the
# WebSocket ends (a ResourceWarning when it is collected); gunicorn, in tests/websocket/test_gevent.py,
# does. Only that warning is ignored here.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <socket\.socket:pytest.PytestUnraisableExceptionWarning"
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def events_handled() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "keel_ws_events":
            total += sum(s.value for s in metric.samples if s.name == "keel_ws_events_total")
    return total


# --- connect -------------------------------------------------------------------------------


def test_connect_refusals_carry_a_code_and_run_no_handler(live: Any, clients: Any) -> None:
    srv = live()
    am = srv.am
    user = srv.user()
    logged_out = srv.user()
    assert am.jwt.decode(logged_out["token"], "access")
    am.jwt.logout(am.jwt.decode(logged_out["token"], "access"))
    banned = srv.user()
    am.limiter.ban("user", str(banned["id"]), 600)
    now = int(time.time())
    key, kid = am.jwt.keys.signing_key, am.jwt.keys.signing_kid
    expired = raw_token({"alg": "HS256", "typ": "JWT", "kid": kid},
                        claims(user["id"], user["username"], iat=now - 4000, nbf=now - 4000, exp=now - 3600), key)
    refused = {
        "no auth": None,
        "auth not an object": "token",
        "empty auth": {},
        "token not a string": {"token": 42},
        "api key not a string": {"api_key": ["keel_x"]},
        "invalid token": {"token": "not.a.jwt"},
        "refresh token": {"token": user["refresh"]},
        "expired token": {"token": expired},
        "revoked token": {"token": logged_out["token"]},
        "invalid api key": {"api_key": "keel_0123456789abcdef_" + "x" * 43},
        "token and api key": {"token": user["token"], "api_key": "keel_0123456789abcdef_" + "x" * 43},
        "user id in the payload": {"user_id": user["id"]},
    }
    for name, auth in refused.items():
        refusal = clients(srv.url, auth, connect=False).try_connect()
        assert refusal == {"code": "unauthorized", "message": GENERIC,
                           "data": {"code": "unauthorized", "message": GENERIC}}, name
    refusal = clients(srv.url, {"token": banned["token"]}, connect=False).try_connect()
    assert refusal["code"] == "banned" and refusal["data"]["code"] == "banned" and refusal["retry_after"] > 0

    assert sample("keel_ws_connects_total", outcome="unauthorized") == len(refused)
    assert sample("keel_ws_connects_total", outcome="banned") == 1
    assert sample("keel_ws_connections") == 0 and events_handled() == 0
    assert len(am.websocket.registry) == 0

    ok = clients(srv.url, {"token": user["token"]})
    assert ok.call("list_rooms")["ok"] is True
    assert sample("keel_ws_connections") == 1 and sample("keel_ws_connects_total", outcome="accepted") == 1


def test_a_banned_ip_is_refused(live: Any, clients: Any) -> None:
    srv = live()
    user = srv.user()
    srv.am.limiter.ban("ip", "127.0.0.1", 600)
    refusal = clients(srv.url, {"token": user["token"]}, connect=False).try_connect()
    assert refusal["code"] == "banned"


def test_origins(live: Any) -> None:
    srv = live(CORS_ORIGINS=["https://app.example/"])
    same = srv.url  # the page's own origin: scheme://Host
    assert handshake(srv.url, "https://evil.example") == 400
    assert handshake(srv.url, "https://app.example") == 101
    assert handshake(srv.url, same) == 101
    default = live()  # CORS_ORIGINS empty: the same origin only
    assert handshake(default.url, "https://app.example") == 400
    assert handshake(default.url, default.url) == 101


def test_api_key_connection_is_its_owner(live: Any, clients: Any) -> None:
    srv = live()
    owner = srv.user("keyowner")
    key = srv.am.api_keys.create("bot", ["tasks:read"], owner_id=owner["id"])["key"]
    orphan_key = srv.am.api_keys.create("cron", ["tasks:read"], owner_id=None)["key"]
    by_token = clients(srv.url, {"token": owner["token"]})
    by_key = clients(srv.url, {"api_key": key})
    orphan = clients(srv.url, {"api_key": orphan_key})
    assert by_token.call("join_room", {"room": "ops"})["members"] == [{"user_id": owner["id"], "username": "keyowner"}]
    joined = by_key.call("join_room", {"room": "ops"})
    assert joined["members"] == [{"user_id": owner["id"], "username": "keyowner"}]  # one member, two connections
    assert orphan.call("join_room", {"room": "ops"})["members"] == [
        {"user_id": owner["id"], "username": "keyowner"}, {"user_id": None, "username": "cron"}
    ]
    sent = by_key.call("room_message", {"room": "ops", "message": "deployed"})
    (received,) = by_token.wait_for("room_message")
    assert received["from"] == {"user_id": owner["id"], "username": "keyowner"} and received["id"] == sent["id"]


# --- events --------------------------------------------------------------------------------


def test_events_answer_through_their_acks(live: Any, clients: Any) -> None:
    srv = live()
    a = clients(srv.url, {"token": srv.user("ann")["token"]})
    b = clients(srv.url, {"token": srv.user("ben")["token"]})

    created = a.call("create_room", {"room": "team.one", "max_members": 10})
    assert created == {"ok": True, "room": "team.one", "members": [{"user_id": 1, "username": "ann"}],
                       "private": False, "max_members": 10}
    assert a.call("create_room", {"room": "team.one"})["error"]["code"] == "conflict"
    assert b.call("join_room", {"room": "team.one"})["members"] == [
        {"user_id": 1, "username": "ann"}, {"user_id": 2, "username": "ben"}
    ]
    assert a.wait_for("presence") == [
        {"room": "team.one", "user": {"user_id": 2, "username": "ben"}, "status": "joined"}
    ]
    assert b.call("join_room", {"room": "team.one"})["ok"]  # again: nothing changes
    assert a.call("join_room", {"room": "lobby"})["members"] == [{"user_id": 1, "username": "ann"}]  # auto-created

    assert a.call("list_rooms") == {"ok": True, "rooms": [
        {"room": "lobby", "private": False, "members": 1, "max_members": None},
        {"room": "team.one", "private": False, "members": 2, "max_members": 10},
    ]}
    assert b.call("room_members", {"room": "lobby"}) == {
        "ok": True, "room": "lobby", "members": [{"user_id": 1, "username": "ann"}]
    }

    sent = b.call("room_message", {"room": "team.one", "message": {"text": "hi", "n": 1}})
    assert sent["ok"] and sent["room"] == "team.one" and len(sent["id"]) == 32
    assert abs(sent["ts"] - time.time() * 1000) < 5000
    for client in (a, b):
        (message,) = client.wait_for("room_message")
        assert message == {"room": "team.one", "id": sent["id"], "from": {"user_id": 2, "username": "ben"},
                           "message": {"text": "hi", "n": 1}, "ts": sent["ts"]}
    assert b.call("room_message", {"room": "lobby", "message": "x"})["error"]["code"] == "forbidden"  # not joined

    assert b.call("leave_room", {"room": "team.one"}) == {"ok": True, "room": "team.one", "left": True}
    assert b.call("leave_room", {"room": "team.one"}) == {"ok": True, "room": "team.one", "left": False}
    wait_until(lambda: len(a.events["presence"]) == 2)
    assert a.events["presence"][1]["status"] == "left"
    assert a.call("leave_room", {"room": "lobby"})["left"] is True
    assert a.call("room_members", {"room": "lobby"})["error"]["code"] == "not_found"  # auto room gone
    assert a.call("room_members", {"room": "team.one"})["ok"]  # a created room stays


@pytest.mark.parametrize(
    ("event", "data", "code"),
    [
        ("join_room", None, "validation_error"),
        ("join_room", ["room"], "validation_error"),
        ("join_room", {"room": ""}, "validation_error"),
        ("join_room", {"room": "a" * 65}, "validation_error"),
        ("join_room", {"room": "no spaces"}, "validation_error"),
        ("join_room", {"room": 7}, "validation_error"),
        ("create_room", {"room": "r", "private": "yes"}, "validation_error"),
        ("create_room", {"room": "r", "members": ["1"]}, "validation_error"),
        ("create_room", {"room": "r", "members": [True]}, "validation_error"),
        ("create_room", {"room": "r", "members": list(range(1, 300))}, "validation_error"),
        ("create_room", {"room": "r", "max_members": -1}, "validation_error"),
        ("create_room", {"room": "r", "max_members": 1.5}, "validation_error"),
        ("room_message", {"room": "r"}, "validation_error"),
        ("room_message", {"room": "r", "message": 42}, "validation_error"),
        ("room_message", {"room": "r", "message": ["a"]}, "validation_error"),
        ("room_message", {"room": "r", "message": "x" * 4097}, "payload_too_large"),
        ("room_message", {"room": "r", "message": "é" * 2049}, "payload_too_large"),  # 4098 bytes
        ("room_message", {"room": "r", "message": {"t": "x" * 4090}}, "payload_too_large"),
        ("room_message", {"room": "r", "message": {"x": float("nan")}}, "validation_error"),
        ("room_message", {"room": "r", "message": {"x": float("inf")}}, "validation_error"),
        ("room_members", {"room": "nope"}, "not_found"),
        ("no_such_event", {"room": "r"}, "not_found"),
    ],
)
def test_invalid_events_are_errors_to_the_caller_only(live: Any, clients: Any, event: str, data: Any,
                                                       code: str) -> None:
    srv = live()
    a = clients(srv.url, {"token": srv.user()["token"]})
    other = clients(srv.url, {"token": srv.user()["token"]})
    assert a.call("join_room", {"room": "r"})["ok"] and other.call("join_room", {"room": "r"})["ok"]
    answer = a.call(event, data)
    assert answer["ok"] is False and answer["error"]["code"] == code and answer["error"]["message"], answer
    assert a.wait_for("error") == [answer["error"]]
    assert sample("keel_ws_events_total", event=event if event != "no_such_event" else "unknown", outcome=code) == 1
    assert other.call("list_rooms")["ok"] and "error" not in other.events


def test_message_size_limit_is_inclusive(live: Any, clients: Any) -> None:
    srv = live()
    a = clients(srv.url, {"token": srv.user()["token"]})
    a.call("join_room", {"room": "r"})
    assert a.call("room_message", {"room": "r", "message": "x" * 4096})["ok"]
    assert a.call("room_message", {"room": "r", "message": "é" * 2048})["ok"]


def test_a_frame_over_the_limit_closes_the_connection(live: Any, clients: Any) -> None:
    srv = live()
    a = clients(srv.url, {"token": srv.user()["token"]})
    a.sio.emit("room_message", {"room": "r", "message": "x" * 40_000})
    a.wait_for("disconnect")
    assert events_handled() == 0


def test_private_rooms_and_max_members(live: Any, clients: Any) -> None:
    srv = live(WS_AUTO_CREATE_ROOMS=False)
    ann, ben, cy = srv.user("ann"), srv.user("ben"), srv.user("cyd")
    a = clients(srv.url, {"token": ann["token"]})
    b = clients(srv.url, {"token": ben["token"]})
    c = clients(srv.url, {"token": cy["token"]})
    assert a.call("create_room", {"room": "secret", "private": True, "members": [ben["id"]]})["private"] is True
    assert c.call("join_room", {"room": "secret"})["error"]["code"] == "forbidden"
    assert c.call("room_members", {"room": "secret"})["error"]["code"] == "forbidden"
    assert c.call("room_message", {"room": "secret", "message": "hi"})["error"]["code"] == "forbidden"
    assert [r["room"] for r in c.call("list_rooms")["rooms"]] == []
    assert b.call("join_room", {"room": "secret"})["ok"]
    assert [r["room"] for r in b.call("list_rooms")["rooms"]] == ["secret"]
    b.call("room_message", {"room": "secret", "message": "for a and b"})
    a.wait_for("room_message")
    time.sleep(0.2)
    assert "room_message" not in c.events

    assert c.call("join_room", {"room": "unknown"})["error"]["code"] == "not_found"  # no auto-create
    assert a.call("create_room", {"room": "duo", "max_members": 2})["ok"]
    assert b.call("join_room", {"room": "duo"})["ok"]
    assert c.call("join_room", {"room": "duo"})["error"]["code"] == "conflict"  # full
    again = clients(srv.url, {"token": srv.am.jwt.issue_pair(srv.am.jwt.users.get(ben["id"]))["access_token"]})
    assert again.call("join_room", {"room": "duo"})["ok"]  # a member's second device is not a new member


def test_presence_counts_devices_and_fires_the_room_hooks(live: Any, clients: Any) -> None:
    srv = live()
    hooked: list[tuple[str, str, Any]] = []
    srv.am.hooks.register("room_joined", lambda room, user, **_: hooked.append(("joined", room, user["user_id"])))
    srv.am.hooks.register("room_left", lambda room, user, **_: hooked.append(("left", room, user["user_id"])))
    watcher_user, ada = srv.user("watcher"), srv.user("ada")
    watcher = clients(srv.url, {"token": watcher_user["token"]})
    watcher.call("join_room", {"room": "hall"})
    phone = clients(srv.url, {"token": ada["token"]})
    laptop = clients(srv.url, {"token": srv.am.jwt.issue_pair(srv.am.jwt.users.get(ada["id"]))["access_token"]})
    phone.call("join_room", {"room": "hall"})
    laptop.call("join_room", {"room": "hall"})
    phone.close()
    assert laptop.call("room_members", {"room": "hall"})["members"] == [
        {"user_id": watcher_user["id"], "username": "watcher"}, {"user_id": ada["id"], "username": "ada"}
    ]
    laptop.close()
    presence = watcher.wait_for("presence", 2)
    assert [(p["user"]["username"], p["status"]) for p in presence] == [("ada", "joined"), ("ada", "left")]
    assert hooked == [
        ("joined", "hall", watcher_user["id"]), ("joined", "hall", ada["id"]), ("left", "hall", ada["id"])
    ]


# --- limits --------------------------------------------------------------------------------


def test_message_rate_is_limited_then_the_identity_is_banned(live: Any, clients: Any) -> None:
    srv = live(WS_MESSAGE_RATE="5/second", BAN_AFTER_VIOLATIONS=3)
    flooder, calm = srv.user(), srv.user()
    f = clients(srv.url, {"token": flooder["token"]})
    c = clients(srv.url, {"token": calm["token"]})
    answers = [f.call("list_rooms") for _ in range(5)]
    assert all(a["ok"] for a in answers)
    limited = f.call("list_rooms")
    assert limited["error"]["code"] == "rate_limited" and limited["error"]["retry_after"] >= 1
    assert f.call("list_rooms")["error"]["code"] == "rate_limited"
    f.sio.emit("list_rooms")  # the third violation bans: force_disconnect, then the connection is dropped
    assert f.wait_for("force_disconnect") == [{"reason": "banned"}]
    f.wait_for("disconnect")
    assert clients(srv.url, {"token": flooder["token"]}, connect=False).try_connect()["code"] == "banned"
    assert c.call("list_rooms")["ok"]  # others are not affected
    assert sample("keel_rate_limit_rejections_total", level="ws_message") == 3
    assert sample("keel_ws_forced_disconnects_total", reason="banned") == 1


def test_unknown_events_count_toward_the_limit(live: Any, clients: Any) -> None:
    srv = live(WS_MESSAGE_RATE="2/second")
    f = clients(srv.url, {"token": srv.user()["token"]})
    codes = [f.call("spam", {"x": 1})["error"]["code"] for _ in range(3)]
    assert codes == ["not_found", "not_found", "rate_limited"]


# --- forced disconnect and the server API -------------------------------------------------


@pytest.mark.parametrize("backend", ["in-process", "redis"])
def test_revocations_and_bans_drop_the_right_connections(live: Any, clients: Any, backend: str) -> None:
    srv = live.redis() if backend == "redis" else live()
    am = srv.am
    ada, bob = srv.user("ada"), srv.user("bob")
    ada2 = am.jwt.issue_pair(am.jwt.users.get(ada["id"]))  # another device: another refresh family
    key = am.api_keys.create("bot", ["tasks:read"], owner_id=ada["id"])
    phone = clients(srv.url, {"token": ada["token"]})
    laptop = clients(srv.url, {"token": ada2["access_token"]})
    bot = clients(srv.url, {"api_key": key["key"]})
    bystander = clients(srv.url, {"token": bob["token"]})
    for client in (phone, laptop, bot, bystander):
        assert client.call("join_room", {"room": "r"})["ok"]

    am.jwt.logout(am.jwt.decode(ada["token"], "access"))  # one device
    assert phone.wait_for("force_disconnect") == [{"reason": "tokens_revoked"}]
    phone.wait_for("disconnect")
    assert laptop.call("list_rooms")["ok"]

    am.jwt.revoke_user_tokens(ada["id"])  # logout-all: every token, not the API key
    assert laptop.wait_for("force_disconnect") == [{"reason": "tokens_revoked"}]
    assert bot.call("list_rooms")["ok"]

    am.api_keys.revoke(key["api_key"]["id"], admin=True)
    assert bot.wait_for("force_disconnect") == [{"reason": "api_key_revoked"}]
    bot.wait_for("disconnect")
    only_bob = [{"user_id": bob["id"], "username": "bob"}]
    wait_until(lambda: bystander.call("room_members", {"room": "r"})["members"] == only_bob)
    assert [p["status"] for p in bystander.wait_for("presence")] == ["left"]  # ada left once, with her last connection
    assert bystander.call("list_rooms")["ok"] and "force_disconnect" not in bystander.events
    assert len(am.websocket.registry) == 1 and sample("keel_ws_connections") == 1


@pytest.mark.parametrize("backend", ["in-process", "redis"])
def test_bans_and_disabling_drop_connections(live: Any, clients: Any, backend: str) -> None:
    srv = live.redis() if backend == "redis" else live()
    am = srv.am
    ada, bob, cy = srv.user(), srv.user(), srv.user()
    key = am.api_keys.create("bot", ["tasks:read"], owner_id=cy["id"])["key"]
    a = clients(srv.url, {"token": ada["token"]})
    b = clients(srv.url, {"token": bob["token"]})
    c_key = clients(srv.url, {"api_key": key})
    am.limiter.ban("user", str(ada["id"]), 60)
    assert a.wait_for("force_disconnect") == [{"reason": "banned"}]
    am.jwt.set_active(cy["id"], False)  # a disabled user loses its API key connections too
    assert c_key.wait_for("force_disconnect") == [{"reason": "tokens_revoked"}]
    am.limiter.ban("ip", "127.0.0.1", 60)
    assert b.wait_for("force_disconnect") == [{"reason": "banned"}]


def test_server_api_for_modules(live: Any, clients: Any) -> None:
    srv = live()
    ws = srv.am.websocket
    ada = srv.user("ada")
    key = srv.am.api_keys.create("bot", ["tasks:read"], owner_id=None)
    a = clients(srv.url, {"token": ada["token"]})
    bot = clients(srv.url, {"api_key": key["key"]})
    a.call("join_room", {"room": "news"})
    bot.call("join_room", {"room": "news"})
    ws.emit_to_room("news", "headline", {"title": "Keel ships rooms"})
    assert a.wait_for("headline") == [{"title": "Keel ships rooms"}]
    assert ws.room_members("news") == [{"user_id": ada["id"], "username": "ada"}, {"user_id": None, "username": "bot"}]
    assert ws.room_members("nowhere") == []
    with pytest.raises(ValueError):
        ws.disconnect_identity()
    with pytest.raises(ValueError):
        ws.disconnect_identity(user_id=1, api_key_id="x")
    from core.errors import ValidationError

    with pytest.raises(ValidationError):
        ws.emit_to_room("bad room", "x", {})
    ws.disconnect_identity(api_key_id=key["api_key"]["id"], reason="maintenance")
    assert bot.wait_for("force_disconnect") == [{"reason": "maintenance"}]
    ws.disconnect_identity(user_id=ada["id"])
    assert a.wait_for("force_disconnect") == [{"reason": "disconnected"}]
    wait_until(lambda: ws.room_members("news") == [])
    health = srv.app.test_client().get("/health").get_json()["managers"]["websocket"]
    assert health["status"] == "healthy" and health["connections"] == 0 and health["store"] == "in-process"


def test_an_unexpected_error_is_internal_error_and_logged(live: Any, clients: Any, caplog: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    srv = live()
    a = clients(srv.url, {"token": srv.user()["token"]})

    def broken(member: str) -> Any:
        raise RuntimeError("store bug")

    monkeypatch.setattr(srv.am.websocket.rooms.store, "rooms", broken)
    with caplog.at_level(logging.ERROR):
        answer = a.call("list_rooms")
    assert answer == {"ok": False, "error": {"code": "internal_error", "message": "Internal server error."}}
    assert any("list_rooms" in r.getMessage() and r.exc_info for r in caplog.records)
    caplog.clear()

    monkeypatch.setattr(srv.am.jwt.users, "get", lambda uid: (_ for _ in ()).throw(RuntimeError("db bug")))
    key = srv.am.api_keys.create("bot", ["tasks:read"], owner_id=1)["key"]
    with caplog.at_level(logging.ERROR):
        refusal = Client(srv.url, {"api_key": key}).try_connect()
    assert refusal["code"] == "internal_error"
    assert sample("keel_ws_connects_total", outcome="internal_error") == 1


def test_tasks_changes_reach_the_tasks_room(live: Any, clients: Any) -> None:
    srv = live()
    user = srv.user()
    member = clients(srv.url, {"token": user["token"]})
    member.call("join_room", {"room": "tasks"})
    http = srv.app.test_client()
    headers = {"Authorization": f"Bearer {user['token']}"}
    created = http.post("/actions/create_task", json={"title": "ship"}, headers=headers).get_json()["result"]
    http.post("/actions/transition_task", json={"id": created["id"], "to": "doing"}, headers=headers)
    changes = member.wait_for("task_changed", 2)
    assert [(c["change"], c["task"]["state"], c["actor"]) for c in changes] == [
        ("created", "todo", f"user:{user['id']}"), ("transition", "doing", f"user:{user['id']}")
    ]


def test_a_process_swept_while_alive_joins_its_rooms_again(live: Any, clients: Any, caplog: Any) -> None:
    from core.websocket.redis_store import RedisRoomStore

    srv = live.redis()
    ws, redis = srv.am.websocket, srv.am.redis
    ada = srv.user("ada")
    member = clients(srv.url, {"token": ada["token"]})
    member.call("join_room", {"room": "r"})
    redis.client.zadd(redis.key("ws", "nodes"), {ws.node: 0})  # as if it had missed its heartbeats
    other = RedisRoomStore(redis, "another-process", 15.0)
    assert other.sweep() == [("r", {"user_id": ada["id"], "username": "ada"})]
    assert ws.room_members("r") == []
    ws.heartbeat.beat()
    assert ws.room_members("r") == [{"user_id": ada["id"], "username": "ada"}]
    assert member.call("room_message", {"room": "r", "message": "still here"})["ok"]


def test_leaves_while_redis_is_down_are_retried_by_the_heartbeat(live: Any, clients: Any, caplog: Any,
                                                                  redis_server_factory: Any) -> None:
    server = redis_server_factory()
    srv = live(REDIS_URL=server.url, BREAKER_THRESHOLD=1, BREAKER_PROBE_INTERVAL=0.1)
    ws = srv.am.websocket
    member = clients(srv.url, {"token": srv.user("ada")["token"]})
    assert member.call("join_room", {"room": "r"})["ok"]
    server.stop()
    member.close()
    wait_until(lambda: len(ws.registry) == 0)
    with caplog.at_level(logging.WARNING):
        ws.heartbeat.beat()
        ws.heartbeat.beat()
    warnings = [r.getMessage() for r in caplog.records if "presence" in r.getMessage()]
    assert warnings == ["websocket presence: Redis does not answer; heartbeats resume when it does"]  # once
    server.start()  # empty: it kept nothing
    wait_until(lambda: not srv.am.redis.breaker.is_open, timeout=10)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ws.heartbeat.beat()
    assert "websocket presence: Redis answers again" in [r.getMessage() for r in caplog.records]
    assert ws.rooms._pending == []  # the leave was retried
