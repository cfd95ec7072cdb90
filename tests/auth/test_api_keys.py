"""API keys: creation, scopes, expiry, revocation, last-used batching, never logged (SPEC §6)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.auth.conftest import assert_unauthorized, bearer, create_user, login


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def setup(request: pytest.FixtureRequest, auth_app: Any) -> tuple[Any, Any, str, str]:
    overrides: dict[str, Any] = {}
    if request.param != "sqlite":
        overrides = {**request.getfixturevalue("pg_config"), **request.getfixturevalue("redis_config")}
    app = auth_app(**overrides)
    client = app.test_client()
    create_user(app, "root", admin=True)
    create_user(app, "mallory")
    return app, client, login(client, "root")["access_token"], login(client, "mallory")["access_token"]


def make_key(client: Any, token: str, **body: Any) -> dict[str, Any]:
    resp = client.post("/auth/api-keys", json={"name": "ci", "scopes": ["tasks:read", "tasks:write"], **body},
                       headers=bearer(token))
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def test_create_use_list_revoke(setup: Any, caplog: Any, capsys: Any) -> None:
    app, client, _root, user = setup
    caplog.set_level(logging.DEBUG)
    events: list[str] = []
    hooks = app.extensions["keel"].hooks
    hooks.register("api_key_created", lambda **d: events.append("created"))
    hooks.register("api_key_revoked", lambda **d: events.append("revoked"))

    created = make_key(client, user)
    key = created["key"]
    assert key.startswith(f"keel_{created['api_key']['id']}_") and len(key.split("_", 2)[2]) >= 43
    ok = client.get("/probe/scoped", headers={"X-API-Key": key})
    assert ok.status_code == 200
    expected = {"id": created["api_key"]["id"], "name": "ci", "scopes": ["tasks:read", "tasks:write"]}
    assert ok.get_json()["api_key"] == expected
    assert ok.get_json()["identity"] == f"api_key:{created['api_key']['id']}"
    assert client.get("/probe/key", headers={"X-API-Key": key}).status_code == 200

    listed = client.get("/auth/api-keys", headers=bearer(user)).get_json()["api_keys"]
    assert [k["id"] for k in listed] == [created["api_key"]["id"]]
    assert listed[0]["prefix"] == f"keel_{created['api_key']['id']}"
    assert key not in str(listed) and key.split("_", 2)[2] not in str(listed)

    assert client.delete(f"/auth/api-keys/{created['api_key']['id']}", headers=bearer(user)).status_code == 200
    assert_unauthorized(client.get("/probe/scoped", headers={"X-API-Key": key}))
    assert events == ["created", "revoked"]
    secret = key.split("_", 2)[2]
    out = capsys.readouterr()
    assert secret not in caplog.text and secret not in out.out and secret not in out.err


def test_bad_keys_are_401_or_403_and_never_logged(setup: Any, caplog: Any, capsys: Any) -> None:
    app, client, _root, user = setup
    caplog.set_level(logging.DEBUG)
    good = make_key(client, user)["key"]
    narrow = make_key(client, user, name="narrow", scopes=["tasks:read"])["key"]
    expiring = make_key(client, user, name="expiring", expires_in_days=1)
    revoked = make_key(client, user, name="revoked")
    client.delete(f"/auth/api-keys/{revoked['api_key']['id']}", headers=bearer(user))
    # Expire one in the database (as if a day had passed) and drop it from the cache.
    am = app.extensions["keel"]
    with am.db.sql.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET expires_at = :t WHERE id = :i"),
                     {"t": time.time() - 1, "i": expiring["api_key"]["id"]})
    am.api_keys.invalidate(expiring["api_key"]["id"])

    key_id, secret = good.split("_", 2)[1], good.split("_", 2)[2]
    wrong = {
        "wrong secret": f"keel_{key_id}_{'A' * 43}",
        "unknown id": f"keel_{'0' * 16}_{secret}",
        "truncated": good[:-1],
        "extra char": good + "A",
        "no prefix": f"{key_id}_{secret}",
        "empty": "",
        "spaces": f" {good}",
        "jwt as api key": "eyJhbGciOiJIUzI1NiJ9.e30.x",
        "expired": expiring["key"],
        "revoked": revoked["key"],
    }
    for name, presented in wrong.items():
        resp = client.get("/probe/scoped", headers={"X-API-Key": presented})
        assert resp.status_code == 401, name
        assert_unauthorized(resp)
    # Valid but unscoped: 403; a key on a user-only endpoint: 403; in the query string: ignored.
    unscoped = client.get("/probe/scoped", headers={"X-API-Key": narrow})
    assert unscoped.status_code == 403 and unscoped.get_json()["error"]["code"] == "forbidden"
    assert client.get("/probe/admin", headers={"X-API-Key": good}).status_code == 403
    assert client.get("/probe/editor", headers={"X-API-Key": good}).status_code == 403  # roles: keys hold none
    assert_unauthorized(client.get(f"/probe/scoped?api_key={good}"))
    assert_unauthorized(client.get(f"/probe/scoped?X-API-Key={good}"))
    assert client.get("/probe/scoped", headers={"X-API-Key": good}).status_code == 200

    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err
    for presented in [good, narrow, expiring["key"], revoked["key"], *wrong.values()]:
        material = presented.split("_", 2)[-1]
        if len(material) >= 16:
            assert material not in logged


def test_owners_and_admins(setup: Any) -> None:
    _app, client, root, user = setup
    mine = make_key(client, user)
    theirs = make_key(client, root, name="root-key")
    # A user sees and revokes only their own keys; another's key looks like it does not exist.
    listed = client.get("/auth/api-keys", headers=bearer(user)).get_json()["api_keys"]
    assert [k["id"] for k in listed] == [mine["api_key"]["id"]]
    assert client.delete(f"/auth/api-keys/{theirs['api_key']['id']}", headers=bearer(user)).status_code == 404
    assert client.delete("/auth/api-keys/nonsense", headers=bearer(user)).status_code == 404
    # An admin sees all and revokes any.
    all_keys = client.get("/auth/api-keys", headers=bearer(root)).get_json()["api_keys"]
    assert {k["id"] for k in all_keys} == {mine["api_key"]["id"], theirs["api_key"]["id"]}
    assert client.delete(f"/auth/api-keys/{mine['api_key']['id']}", headers=bearer(root)).status_code == 200
    assert_unauthorized(client.get("/probe/any", headers={"X-API-Key": mine["key"]}))
    # API keys cannot manage keys (user token needed), and bad bodies are 400.
    assert client.get("/auth/api-keys", headers={"X-API-Key": theirs["key"]}).status_code == 403
    bad = client.post("/auth/api-keys", json={"name": "", "scopes": ["Bad Scope"]}, headers=bearer(user))
    assert bad.status_code == 400
    assert client.post("/auth/api-keys", json={"name": "x", "scopes": "a"}, headers=bearer(user)).status_code == 400
    too_long = client.post("/auth/api-keys", json={"name": "x", "expires_in_days": 0}, headers=bearer(user))
    assert too_long.status_code == 400


def test_disabled_owner_key_stops_working(setup: Any) -> None:
    app, client, _root, user = setup
    key = make_key(client, user)
    am = app.extensions["keel"]
    assert client.get("/probe/any", headers={"X-API-Key": key["key"]}).status_code == 200
    am.jwt.set_active(am.jwt.users.by_username("mallory").id, False)
    am.api_keys.invalidate(key["api_key"]["id"])
    assert_unauthorized(client.get("/probe/any", headers={"X-API-Key": key["key"]}))


def test_last_used_is_batched_not_written_per_request(setup: Any) -> None:
    app, client, _root, user = setup
    key = make_key(client, user)
    am = app.extensions["keel"]
    statements: list[str] = []
    sa.event.listen(am.db.sql, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for _ in range(20):
        assert client.get("/probe/any", headers={"X-API-Key": key["key"]}).status_code == 200
    writes = [s for s in statements if "api_keys" in s and s.lstrip().upper().startswith("UPDATE")]
    assert writes == []
    assert len([s for s in statements if "api_keys" in s]) <= 1  # one cached lookup
    am.api_keys.flush_last_used()
    listed = client.get("/auth/api-keys", headers=bearer(user)).get_json()["api_keys"]
    assert listed[0]["last_used_at"] is not None


def test_revocation_seen_by_another_instance(auth_app: Any, pg_config: Any, redis_config: Any) -> None:
    shared = {"JWT_SECRET_KEY": "k" * 48, "API_KEY_PEPPER": "p" * 48, **pg_config, **redis_config}
    one, two = auth_app(**shared), auth_app(**shared)
    create_user(one, "nina")
    c1, c2 = one.test_client(), two.test_client()
    key = make_key(c1, login(c1, "nina")["access_token"])
    assert c2.get("/probe/any", headers={"X-API-Key": key["key"]}).status_code == 200  # now cached in two
    one.extensions["keel"].api_keys.revoke(key["api_key"]["id"], admin=True, actor="test")
    assert_unauthorized(c2.get("/probe/any", headers={"X-API-Key": key["key"]}))
