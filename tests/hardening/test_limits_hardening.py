"""Hardening (issue 12) items 1, 4, 5, 8 and 16: an API key never reaches more than its owner
could and shares the owner's limits; strangers cannot lock an owner out of login (device
tokens); a banned user gets no tokens; ``BAN_EXEMPT_NETWORKS``.

Through the public surface (HTTP with Flask's test client, the CLI), on SQLite and on
PostgreSQL + Redis. Two apps on one database (and Redis) act as two workers of one deployment.
A role change has no HTTP route: it is made with the JWT manager's ``set_roles``, as an
operator's code would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.auth.conftest import PASSWORD, assert_unauthorized, bearer

BACKENDS = ["sqlite", "postgresql+redis"]
API_KEY_CACHE_TTL = 1.0

ACTIONS_YAML = """\
version: 1
module: system
actions:
  h_editor_read: {handler: info, auth: any, methods: [GET], roles: [editor], scopes: ["x:read"]}
  h_editor_only: {handler: info, auth: any, methods: [GET], roles: [editor]}
  h_scoped: {handler: info, auth: any, methods: [GET], scopes: ["x:read"]}
  h_limited: {handler: info, auth: any, methods: [GET], scopes: ["x:read"], rate_limit: "5/minute"}
"""


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The settings of every app of a test on ``request.param``'s backend (shared keys, so
    that two apps act as two workers of one deployment), with the actions above."""
    actions = tmp_path / "hardening_limits_actions"
    actions.mkdir(exist_ok=True)
    (actions / "h.yaml").write_text(ACTIONS_YAML)
    shared: dict[str, Any] = {
        "JWT_SECRET_KEY": "k" * 48,
        "API_KEY_PEPPER": "p" * 48,
        "API_KEY_CACHE_TTL": API_KEY_CACHE_TTL,
        "ACTIONS_DIR": str(actions),
        "LOG_LEVEL": "WARNING",
    }
    if request.param == "sqlite":
        return shared
    return {**shared, **request.getfixturevalue("pg_config"), **request.getfixturevalue("redis_config")}


def backends(test: Callable[..., Any]) -> Any:
    return pytest.mark.parametrize("settings", BACKENDS, indirect=True)(test)


def ip(address: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def code(resp: Any) -> str:
    return "ok" if resp.status_code < 400 else str(resp.get_json()["error"]["code"])


def register(client: Any, username: str, **kw: Any) -> int:
    resp = client.post("/auth/register", json={"username": username, "password": PASSWORD}, **kw)
    assert resp.status_code == 201, resp.get_json()
    return int(resp.get_json()["user"]["id"])


def login(client: Any, username: str, password: str = PASSWORD, **kw: Any) -> Any:
    return client.post("/auth/login", json={"username": username, "password": password, **kw.pop("json", {})}, **kw)


def tokens(client: Any, username: str, **kw: Any) -> dict[str, Any]:
    resp = login(client, username, **kw)
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def admin_token(app: Any, client: Any, name: str = "root") -> str:
    """An admin made with the CLI, logged in over HTTP."""
    result = app.test_cli_runner().invoke(
        args=["users", "create", name, "--admin", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    return str(tokens(client, name, **ip("192.0.2.250"))["access_token"])


def new_key(client: Any, access: str, scopes: list[str], **kw: Any) -> str:
    resp = client.post("/auth/api-keys", json={"name": "k", "scopes": scopes}, headers=bearer(access), **kw)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["key"])


def key(value: str) -> dict[str, str]:
    return {"X-API-Key": value}


def eventually(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.05)


# --- 1: a key never reaches more than its owner could ------------------------------------------


@backends
def test_item_01_a_key_reaches_only_what_its_owner_could(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings)
    client = app.test_client()
    am = app.extensions["keel"]
    uid = register(client, "plain")
    access = tokens(client, "plain")["access_token"]
    # the case: a plain user is refused; a key they mint with the action's scope too
    assert client.get("/actions/h_editor_read", headers=bearer(access)).status_code == 403
    minted = new_key(client, access, ["x:read"])
    refused = client.get("/actions/h_editor_read", headers=key(minted))
    assert refused.status_code == 403 and code(refused) == "forbidden"
    assert "owner" in refused.get_json()["error"]["message"]
    assert client.get("/actions/h_scoped", headers=key(minted)).status_code == 200  # scopes only: fine
    # the owner's CURRENT roles decide: granted, the key passes; withdrawn, it is refused at once
    am.jwt.set_roles(uid, ["user", "editor"], actor="test")
    assert client.get("/actions/h_editor_read", headers=key(minted)).status_code == 200
    # roles and no scopes: closed to every key, whatever its owner holds
    assert client.get("/actions/h_editor_only", headers=key(minted)).status_code == 403
    am.jwt.set_roles(uid, ["user"], actor="test")
    assert client.get("/actions/h_editor_read", headers=key(minted)).status_code == 403
    # ... and its active flag: a disabled owner's key does not authenticate
    am.jwt.set_active(uid, False, actor="test")
    assert_unauthorized(client.get("/actions/h_scoped", headers=key(minted)))


@backends
def test_item_01_another_workers_role_change_decides_the_next_request(make_app: Any, settings: dict[str, Any]) -> None:
    """Worker B caches the key's record while its owner is an editor; worker A withdraws the
    role. With Redis the first request B serves afterwards is refused (its principal comes from
    the record read again, not the cached one); without Redis within ``API_KEY_CACHE_TTL``."""
    a, b = make_app(**settings), make_app(**settings)
    ca, cb = a.test_client(), b.test_client()
    uid = register(ca, "edith")
    a.extensions["keel"].jwt.set_roles(uid, ["user", "editor"], actor="test")
    minted = new_key(ca, tokens(ca, "edith")["access_token"], ["x:read"])
    assert cb.get("/actions/h_editor_read", headers=key(minted)).status_code == 200  # cached on B
    a.extensions["keel"].jwt.set_roles(uid, ["user"], actor="test")
    if settings.get("REDIS_URL"):
        assert cb.get("/actions/h_editor_read", headers=key(minted)).status_code == 403
    else:
        eventually(lambda: cb.get("/actions/h_editor_read", headers=key(minted)).status_code == 403,
                   API_KEY_CACHE_TTL + 1)
    # and a grant reaches B the same way
    a.extensions["keel"].jwt.set_roles(uid, ["user", "editor"], actor="test")
    eventually(lambda: cb.get("/actions/h_editor_read", headers=key(minted)).status_code == 200,
               API_KEY_CACHE_TTL + 1)


@backends
def test_item_01_keys_without_an_owner_pass_roles_only_where_scopes_name_them(
    make_app: Any, settings: dict[str, Any]
) -> None:
    app = make_app(**settings)
    client = app.test_client()
    made = app.test_cli_runner().invoke(args=["api-keys", "create", "--name", "ops", "--scope", "x:read"])
    assert made.exit_code == 0, made.output
    ops = made.output.strip().splitlines()[0]
    assert client.get("/actions/h_editor_read", headers=key(ops)).status_code == 200  # roles + scopes it holds
    assert client.get("/actions/h_editor_only", headers=key(ops)).status_code == 403  # roles, no scopes
    assert client.get("/actions/list_bans", headers=key(ops)).status_code == 403  # admin-only


@backends
def test_item_01_keys_hold_only_scopes_that_endpoints_declare(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings)
    client = app.test_client()
    register(client, "scoper")
    access = tokens(client, "scoper")["access_token"]
    resp = client.post("/auth/api-keys", json={"name": "k", "scopes": ["x:read", "x:admin"]}, headers=bearer(access))
    assert resp.status_code == 400 and code(resp) == "validation_error"
    message = resp.get_json()["error"]["details"][0]["message"]
    assert "x:admin" in message and "x:read" in message and "tasks:read" in message  # what exists
    assert client.get("/auth/api-keys", headers=bearer(access)).get_json()["api_keys"] == []
    cli = app.test_cli_runner().invoke(args=["api-keys", "create", "--name", "n", "--scope", "made:up"])
    assert cli.exit_code != 0 and "made:up" in cli.output
    new_key(client, access, ["x:read", "tasks:read"])  # declared by an action file and a module's


# --- 4: strangers cannot lock the owner out of login --------------------------------------------

LOGIN_LIMIT = {"RATE_LIMIT_LOGIN": "3/minute", "BAN_AFTER_VIOLATIONS": 1000}


@backends
def test_item_04_strangers_cannot_lock_the_owner_out(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings, **LOGIN_LIMIT)
    client = app.test_client(use_cookies=False)  # API clients: a device token only if they send one
    register(client, "alice")
    register(client, "bob")
    first = login(client, "alice", **ip("198.51.100.1"))
    assert first.status_code == 200
    device = first.get_json()["device_token"]
    cookie = first.headers["Set-Cookie"]
    for part in ("keel_device=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/auth/login", "Max-Age=2592000"):
        assert part in cookie, cookie
    bobs = tokens(client, "bob", **ip("198.51.100.2"))["device_token"]
    # strangers from ten addresses use up the username's attempts
    got = [code(login(client, "alice", "wrong-password", **ip(f"203.0.113.{i}"))) for i in range(10)]
    assert got == ["invalid_credentials"] * 2 + ["rate_limited"] * 8
    # the right password from a fresh address without a device token: the username's bucket
    assert code(login(client, "alice", **ip("198.51.100.50"))) == "rate_limited"
    # ... and in any case or compatibility form: one account, one bucket
    for variant in ("ALICE", "Alice", "ａｌｉｃｅ"):
        assert code(login(client, variant, **ip("198.51.100.51"))) == "rate_limited", variant
    # the owner's device token (an API client's JSON field, a browser's cookie) lets them in
    again = login(client, "alice", json={"device_token": device}, **ip("198.51.100.52"))
    assert again.status_code == 200 and again.get_json()["device_token"] != device
    browser = app.test_client()
    browser.set_cookie("keel_device", device, path="/auth/login")
    assert login(browser, "ALICE", **ip("198.51.100.53")).status_code == 200
    # a forged token, or another user's, is no device token: the username's bucket answers
    forged = device[:-2] + ("AA" if not device.endswith("AA") else "BB")
    for other in (forged, bobs, "kd1.1.99999999999.x.y", "garbage"):
        assert code(login(client, "alice", json={"device_token": other}, **ip("198.51.100.54"))) == "rate_limited"
    # the device has its own bucket (3/minute): it was used twice, one more attempt, then 429
    assert code(login(client, "alice", "wrong-password", json={"device_token": device}, **ip("198.51.100.55"))) == (
        "invalid_credentials"
    )
    assert code(login(client, "alice", json={"device_token": device}, **ip("198.51.100.56"))) == "rate_limited"


def test_item_04_device_tokens_expire(make_app: Any) -> None:
    app = make_app(AUTH_DEVICE_TTL=3, **LOGIN_LIMIT)  # room for three password hashes on a busy machine
    client = app.test_client(use_cookies=False)
    register(client, "carol")
    device = tokens(client, "carol", **ip("198.51.100.1"))["device_token"]
    issued = time.monotonic()
    for i in range(2):
        login(client, "carol", "wrong-password", **ip(f"203.0.113.{i}"))
    assert login(client, "carol", json={"device_token": device}, **ip("198.51.100.2")).status_code == 200
    assert time.monotonic() - issued < 3, "the logins took longer than the device token's lifetime"
    time.sleep(max(0.0, issued + 3.1 - time.monotonic()))
    assert code(login(client, "carol", json={"device_token": device}, **ip("198.51.100.3"))) == "rate_limited"


def test_item_04_no_device_tokens_when_their_ttl_is_zero(make_app: Any) -> None:
    app = make_app(AUTH_DEVICE_TTL=0)
    client = app.test_client()
    register(client, "dave")
    resp = login(client, "dave")
    assert resp.status_code == 200 and "device_token" not in resp.get_json()
    assert "Set-Cookie" not in resp.headers


# --- 5: a user's keys share the user's buckets -----------------------------------------------


@backends
def test_item_05_keys_share_their_owners_buckets(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings, RATE_LIMIT_USER="8/minute", BAN_AFTER_VIOLATIONS=1000)
    client = app.test_client()
    register(client, "spender")
    access = tokens(client, "spender")["access_token"]
    # the case: the user spends the action's 5/minute, then a key minted after gets none
    assert [code(client.get("/actions/h_limited", headers=bearer(access))) for _ in range(6)] == (
        ["ok"] * 5 + ["rate_limited"]
    )
    minted = new_key(client, access, ["x:read"])
    assert code(client.get("/actions/h_limited", headers=key(minted))) == "rate_limited"
    second = new_key(client, access, ["x:read"])
    assert code(client.get("/actions/h_limited", headers=key(second))) == "rate_limited"
    # the user level too: 5 actions and 2 key creations counted (refusals count nothing); the
    # owner's 8/minute is one bucket for their token and both keys
    assert code(client.get("/actions/h_scoped", headers=key(minted))) == "ok"  # the 8th
    for who in (key(minted), key(second), bearer(access)):
        resp = client.get("/actions/h_scoped", headers=who)
        assert code(resp) == "rate_limited" and int(resp.headers["Retry-After"]) > 0


@backends
def test_item_05_a_keys_own_limit_is_stricter_never_looser(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings, RATE_LIMIT_USER="100/minute", RATE_LIMIT_API_KEY="2/minute", BAN_AFTER_VIOLATIONS=1000)
    client = app.test_client()
    register(client, "strict")
    access = tokens(client, "strict")["access_token"]
    minted = new_key(client, access, ["x:read"])
    got = [code(client.get("/actions/h_scoped", headers=key(minted))) for _ in range(3)]
    assert got == ["ok", "ok", "rate_limited"]
    assert code(client.get("/actions/h_scoped", headers=bearer(access))) == "ok"  # the owner is not held back


@backends
def test_item_05_a_keys_violations_ban_the_key_not_its_owner(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings, RATE_LIMIT_USER="3/minute", BAN_AFTER_VIOLATIONS=2)
    client = app.test_client()
    uid = register(client, "runaway")
    access = tokens(client, "runaway")["access_token"]
    minted = new_key(client, access, ["x:read"])  # the user level counted 1 (the creation)
    got = [code(client.get("/actions/h_scoped", headers=key(minted))) for _ in range(5)]
    assert got == ["ok", "ok", "rate_limited", "banned", "banned"]  # the owner's 3/minute, shared
    bans = [(b["kind"], b["identifier"]) for b in app.extensions["keel"].limiter.list_bans()]
    assert bans == [("api_key", minted.split("_")[1])]
    assert code(client.get("/actions/h_scoped", headers=bearer(access))) == "rate_limited"  # not banned
    assert str(uid) not in {identifier for _kind, identifier in bans}


@backends
def test_item_05_a_banned_owners_keys_are_refused(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings)
    client = app.test_client()
    root = admin_token(app, client)
    uid = register(client, "owner")
    minted = new_key(client, tokens(client, "owner")["access_token"], ["x:read"])
    banned = client.post("/actions/ban", json={"kind": "user", "identifier": str(uid), "seconds": 600},
                         headers=bearer(root), **ip("192.0.2.250"))
    assert banned.status_code == 200, banned.get_json()
    resp = client.get("/actions/h_scoped", headers=key(minted))
    assert code(resp) == "banned" and int(resp.headers["Retry-After"]) > 0


@backends
def test_item_05_key_creation_is_limited(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings, RATE_LIMIT_API_KEY_CREATE="2/minute", BAN_AFTER_VIOLATIONS=1000)
    client = app.test_client()
    register(client, "minter")
    access = tokens(client, "minter")["access_token"]
    new_key(client, access, [])
    new_key(client, access, [])
    resp = client.post("/auth/api-keys", json={"name": "k", "scopes": []}, headers=bearer(access))
    assert resp.status_code == 429 and code(resp) == "rate_limited" and int(resp.headers["Retry-After"]) > 0
    assert len(client.get("/auth/api-keys", headers=bearer(access)).get_json()["api_keys"]) == 2


@backends
def test_item_05_live_keys_per_user_are_capped(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings, API_KEYS_PER_USER=3, RATE_LIMIT_API_KEY_CREATE="1000/minute")
    client = app.test_client()
    register(client, "hoarder")
    access = tokens(client, "hoarder")["access_token"]

    def create(_: int) -> Any:
        return client.post("/auth/api-keys", json={"name": "k", "scopes": []}, headers=bearer(access))

    # concurrent creations never get past the cap
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    assert sorted(r.status_code for r in results) == [201] * 3 + [409] * 3
    refused = next(r for r in results if r.status_code == 409)
    assert code(refused) == "conflict" and "API_KEYS_PER_USER" in refused.get_json()["error"]["message"]
    listed = client.get("/auth/api-keys", headers=bearer(access)).get_json()["api_keys"]
    assert len(listed) == 3
    # a revoked key is not live: one may be created in its place
    assert client.delete(f"/auth/api-keys/{listed[0]['id']}", headers=bearer(access)).status_code == 200
    assert create(0).status_code == 201
    assert create(0).status_code == 409
    # the cap holds for keys an admin or the CLI creates for the user too
    cli = app.test_cli_runner().invoke(args=["api-keys", "create", "--name", "n", "--owner", "hoarder"])
    assert cli.exit_code != 0 and "API_KEYS_PER_USER" in cli.output


# --- 8: a banned user gets no tokens ----------------------------------------------------------


@backends
def test_item_08_a_banned_user_gets_no_tokens(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings)
    client = app.test_client()
    root = admin_token(app, client)
    uid = register(client, "mallory")
    refresh = tokens(client, "mallory")["refresh_token"]
    ban = {"kind": "user", "identifier": str(uid), "seconds": 600}
    assert client.post("/actions/ban", json=ban, headers=bearer(root), **ip("192.0.2.250")).status_code == 200
    resp = login(client, "mallory", **ip("198.51.100.9"))
    assert resp.status_code == 403 and code(resp) == "banned" and 0 < int(resp.headers["Retry-After"]) <= 600
    assert "access_token" not in resp.get_json() and "Set-Cookie" not in resp.headers
    # a wrong password is a wrong password: the ban is not disclosed to who lacks the password
    assert code(login(client, "mallory", "wrong-password", **ip("198.51.100.9"))) == "invalid_credentials"
    # no refresh either, and the refresh token is not spent by the refusal
    refused = client.post("/auth/refresh", json={"refresh_token": refresh}, **ip("198.51.100.9"))
    assert refused.status_code == 403 and code(refused) == "banned" and "Retry-After" in refused.headers
    lift = {"kind": "user", "identifier": str(uid)}
    assert client.post("/actions/lift_ban", json=lift, headers=bearer(root), **ip("192.0.2.250")).status_code == 200
    assert client.post("/auth/refresh", json={"refresh_token": refresh}, **ip("198.51.100.9")).status_code == 200
    assert login(client, "mallory", **ip("198.51.100.9")).status_code == 200


@backends
def test_item_08_no_login_from_a_banned_address(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings)
    client = app.test_client()
    register(client, "trent", **ip("198.51.100.10"))
    assert app.extensions["keel"].limiter.ban("ip", "203.0.113.66", 600, actor="test")["seconds"] == 600
    resp = login(client, "trent", **ip("203.0.113.66"))
    assert resp.status_code == 403 and code(resp) == "banned" and int(resp.headers["Retry-After"]) > 0
    assert "access_token" not in resp.get_json()
    result = app.test_cli_runner().invoke(args=["bans", "lift", "ip", "203.0.113.66"])
    assert result.exit_code == 0, result.output
    assert login(client, "trent", **ip("203.0.113.66")).status_code == 200


# --- 16: BAN_EXEMPT_NETWORKS --------------------------------------------------------------------

DEFAULT = {"BAN_EXEMPT_NETWORKS": None}  # the tests' base settings set [], the default is None


@backends
def test_item_16_loopback_is_never_limited_or_banned_in_development_and_test(
    make_app: Any, settings: dict[str, Any]
) -> None:
    app = make_app(**settings, **DEFAULT, RATE_LIMIT_IP="2/minute", RATE_LIMIT_LOGIN="3/minute", BAN_AFTER_VIOLATIONS=2)
    client = app.test_client()  # from 127.0.0.1
    register(client, "local")
    # the README's wrong-password examples, many times over: never a 429, never a ban
    assert {code(login(client, "local", "wrong-password")) for _ in range(8)} == {"invalid_credentials"}
    assert login(client, "local").status_code == 200
    for path in ("/docs", "/actions/h_scoped", "/openapi.json"):
        resp = client.get(path)
        assert resp.status_code in (200, 401), (path, resp.status_code)
        assert "X-RateLimit-Limit" not in resp.headers
    assert app.extensions["keel"].limiter.list_bans() == []
    # IPv6 loopback, and IPv4-mapped loopback, are loopback
    for address in ("::1", "::ffff:127.0.0.1"):
        assert {client.get("/openapi.json", **ip(address)).status_code for _ in range(4)} == {200}
    # an admin cannot ban an exempt address (it would never apply)
    refused = client.post("/actions/ban", json={"kind": "ip", "identifier": "127.0.0.1", "seconds": 60},
                          headers=bearer(admin_token(app, client)), **ip("192.0.2.250"))
    assert refused.status_code == 400 and "BAN_EXEMPT_NETWORKS" in refused.get_json()["error"]["details"][0]["message"]
    # any other client is limited, and banned, as before
    got = [code(client.get("/openapi.json", **ip("203.0.113.5"))) for _ in range(5)]
    assert got == ["ok", "ok", "rate_limited", "banned", "banned"]  # the 2nd violation bans


@backends
def test_item_16_a_forwarded_header_never_makes_a_client_exempt(make_app: Any, settings: dict[str, Any]) -> None:
    spoofed = {"X-Forwarded-For": "127.0.0.1"}
    direct = make_app(**settings, **DEFAULT, RATE_LIMIT_IP="2/minute", BAN_AFTER_VIOLATIONS=1000).test_client()
    got = [code(direct.get("/openapi.json", headers=spoofed, **ip("203.0.113.7"))) for _ in range(3)]
    assert got == ["ok", "ok", "rate_limited"]
    # behind one trusted proxy on loopback, the client is the address the proxy saw
    proxied = make_app(
        **settings, **DEFAULT, RATE_LIMIT_IP="2/minute", BAN_AFTER_VIOLATIONS=1000, TRUSTED_PROXY_COUNT=1
    ).test_client()
    chain = {"X-Forwarded-For": "127.0.0.1, 203.0.113.8"}  # the client's spoof, then what the proxy saw
    got = [code(proxied.get("/openapi.json", headers=chain, **ip("127.0.0.1"))) for _ in range(3)]
    assert got == ["ok", "ok", "rate_limited"]


@backends
def test_item_16_a_banned_user_stays_banned_on_an_exempt_network(make_app: Any, settings: dict[str, Any]) -> None:
    """The exemption is of the network: a ban of the user or key it acts as still applies."""
    app = make_app(**settings, **DEFAULT)
    client = app.test_client()
    uid = register(client, "eve")
    access = tokens(client, "eve")["access_token"]
    minted = new_key(client, access, ["x:read"])
    app.extensions["keel"].limiter.ban("user", str(uid), 600, actor="test")
    for headers in (bearer(access), key(minted)):
        assert code(client.get("/actions/h_scoped", headers=headers)) == "banned"
    assert code(login(client, "eve")) == "banned"


@pytest.mark.parametrize("value", [["10.0.0.0/8", "2001:db8::/32"], "10.0.0.0/8,2001:db8::/32"])
def test_item_16_configured_networks(make_app: Any, value: Any) -> None:
    app = make_app(BAN_EXEMPT_NETWORKS=value, RATE_LIMIT_IP="1/minute")
    client = app.test_client()
    for address in ("10.1.2.3", "2001:db8::5"):
        assert {client.get("/openapi.json", **ip(address)).status_code for _ in range(3)} == {200}
    assert [client.get("/openapi.json").status_code for _ in range(2)] == [200, 429]  # loopback: not listed


def test_item_16_a_bad_network_is_a_config_error(make_app: Any) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"BAN_EXEMPT_NETWORKS from override: expected networks.*'localhost'"):
        make_app(BAN_EXEMPT_NETWORKS=["127.0.0.1/8", "localhost"])


def test_item_16_production_exempts_nobody_by_default(make_app: Any) -> None:
    app = make_app(
        **DEFAULT,
        APP_ENV="production",
        JWT_SECRET_KEY="k" * 48,
        API_KEY_PEPPER="p" * 48,
        ENCRYPTION_KEYS=[Fernet.generate_key().decode()],
        TRUSTED_HOSTS=["localhost"],
        RATE_LIMIT_IP="2/minute",
        LOG_FORMAT="text",
    )
    client = app.test_client()
    assert [client.get("/openapi.json").status_code for _ in range(3)] == [200, 200, 429]
