"""The /auth routes of SPEC §6 on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import pytest

from tests.auth.conftest import PASSWORD, assert_unauthorized, bearer, create_user, login


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, auth_app: Any) -> Any:
    overrides = request.getfixturevalue("pg_config") if request.param == "postgresql" else {}
    return auth_app(**overrides)


def test_register_login_me(app: Any) -> None:
    client = app.test_client()
    events: list[tuple[str, Any]] = []
    hooks = app.extensions["keel"].hooks
    hooks.register("user_registered", lambda **d: events.append(("registered", d["user"]["username"])))
    hooks.register("user_logged_in", lambda **d: events.append(("logged_in", d["user"]["username"])))

    resp = client.post("/auth/register", json={"username": "alice", "password": PASSWORD, "email": "a@example.com"})
    assert resp.status_code == 201
    user = resp.get_json()["user"]
    assert user["username"] == "alice" and user["roles"] == ["user"] and user["email"] == "a@example.com"
    assert "password" not in str(resp.get_json()) and "hash" not in str(resp.get_json())

    pair = login(client, "alice")
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    assert pair["success"] is True and pair["access_token"] != pair["refresh_token"]
    me = client.get("/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200 and me.get_json()["user"]["id"] == user["id"]
    assert events == [("registered", "alice"), ("logged_in", "alice")]


def test_register_rules(app: Any, make_app: Any) -> None:
    client = app.test_client()
    assert client.post("/auth/register", json={"username": "bob", "password": PASSWORD}).status_code == 201
    taken = client.post("/auth/register", json={"username": "bob", "password": PASSWORD})
    assert taken.status_code == 409 and taken.get_json()["error"]["code"] == "conflict"
    short = client.post("/auth/register", json={"username": "carol", "password": "1234567"})
    assert short.status_code == 400 and short.get_json()["error"]["details"][0]["param"] == "password"
    long = client.post("/auth/register", json={"username": "carol", "password": "x" * 257})
    assert long.status_code == 400
    assert client.post("/auth/register", json={"username": "carol", "password": "x" * 256}).status_code == 201
    assert client.post("/auth/register", json={"username": "a b", "password": PASSWORD}).status_code == 400
    assert client.post("/auth/register", json=["x"]).status_code == 400
    assert client.post("/auth/register", data="x", content_type="text/plain").status_code == 415

    closed = make_app(AUTH_REGISTRATION_OPEN=False).test_client()
    resp = closed.post("/auth/register", json={"username": "dave", "password": PASSWORD})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"


def test_login_same_answer_for_unknown_user_and_wrong_password(app: Any, caplog: Any) -> None:
    client = app.test_client()
    create_user(app, "erin")
    caplog.set_level(logging.INFO)

    def attempt(username: str, password: str) -> tuple[float, Any]:
        started = time.perf_counter()
        resp = client.post("/auth/login", json={"username": username, "password": password})
        return time.perf_counter() - started, resp

    answers = []
    wrong_t, unknown_t = [], []
    for _ in range(5):
        t, resp = attempt("erin", "wrong password!")
        wrong_t.append(t)
        answers.append(resp)
        t, resp = attempt("nobody", "wrong password!")
        unknown_t.append(t)
        answers.append(resp)
    for resp in answers:
        assert resp.status_code == 401
        error = resp.get_json()["error"]
        assert error == {"code": "invalid_credentials", "message": "Invalid username or password.", "details": None}
    # Both paths run one argon2 verification: similar timing.
    ratio = statistics.median(unknown_t) / statistics.median(wrong_t)
    assert 0.5 < ratio < 2.0, (wrong_t, unknown_t)
    assert "wrong password!" not in caplog.text
    assert [r for r in caplog.records if r.name == "keel.audit" and r.getMessage() == "login failed"]

    # A disabled user gets the same answer even with the right password.
    user = app.extensions["keel"].jwt.users.by_username("erin")
    app.extensions["keel"].jwt.set_active(user.id, False)
    _, resp = attempt("erin", PASSWORD)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_credentials"


def test_refresh_rotates_and_reuse_revokes_the_family(app: Any) -> None:
    client = app.test_client()
    create_user(app, "frank")
    revoked: list[dict[str, Any]] = []
    app.extensions["keel"].hooks.register("tokens_revoked", lambda **d: revoked.append(d))
    first = login(client, "frank")
    other_session = login(client, "frank")

    second = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    pair = second.get_json()
    assert pair["refresh_token"] != first["refresh_token"]
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200

    # The spent token again: refused, and every token of that family is revoked.
    assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}))
    assert_unauthorized(client.get("/auth/me", headers=bearer(pair["access_token"])))
    assert_unauthorized(client.get("/auth/me", headers=bearer(first["access_token"])))
    assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}))
    assert [d["reason"] for d in revoked] == ["refresh_reuse"]
    # Another login (another family) is untouched.
    assert client.get("/auth/me", headers=bearer(other_session["access_token"])).status_code == 200
    assert client.post("/auth/refresh", json={"refresh_token": other_session["refresh_token"]}).status_code == 200
    assert client.post("/auth/refresh", json={}).status_code == 400


def test_logout_and_logout_all(app: Any) -> None:
    client = app.test_client()
    create_user(app, "gina")
    a = login(client, "gina")
    b = login(client, "gina")
    c = login(client, "gina")
    assert_unauthorized(client.post("/auth/logout"))
    assert client.post("/auth/logout", headers=bearer(a["access_token"])).status_code == 200
    assert_unauthorized(client.get("/auth/me", headers=bearer(a["access_token"])))
    assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": a["refresh_token"]}))
    assert client.get("/auth/me", headers=bearer(b["access_token"])).status_code == 200

    assert client.post("/auth/logout-all", headers=bearer(b["access_token"])).status_code == 200
    for pair in (b, c):
        assert_unauthorized(client.get("/auth/me", headers=bearer(pair["access_token"])))
        assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}))
    fresh = login(client, "gina")
    assert client.get("/auth/me", headers=bearer(fresh["access_token"])).status_code == 200


def test_roles_and_scopes_on_guarded_routes(app: Any) -> None:
    client = app.test_client()
    am = app.extensions["keel"]
    create_user(app, "root", admin=True)
    editor = create_user(app, "eddie")
    create_user(app, "plain")
    am.jwt.set_roles(editor.id, ["user", "editor"])
    root = login(client, "root")["access_token"]
    ed = login(client, "eddie")["access_token"]
    plain = login(client, "plain")["access_token"]

    assert_unauthorized(client.get("/probe/admin"))
    assert client.get("/probe/admin", headers=bearer(plain)).status_code == 403
    assert client.get("/probe/admin", headers=bearer(ed)).status_code == 403
    ok = client.get("/probe/admin", headers=bearer(root))
    assert ok.status_code == 200
    assert ok.get_json()["user"] == {"id": 1, "username": "root", "roles": ["admin", "user"]}
    assert client.get("/probe/editor", headers=bearer(ed)).status_code == 200
    assert client.get("/probe/editor", headers=bearer(root)).status_code == 200  # admin holds every role
    assert client.get("/probe/editor", headers=bearer(plain)).status_code == 403
    assert client.get("/probe/key", headers=bearer(root)).status_code == 403  # needs an API key
    assert client.get("/probe/public").status_code == 200
    assert client.get("/probe/any", headers=bearer(plain)).get_json()["identity"].startswith("user:")


def test_login_attempts_reach_the_limiter(auth_app: Any) -> None:
    """Failed logins count toward the IP's ban; attempts are limited per username and IP."""
    app = auth_app(RATE_LIMIT_LOGIN="50/minute", BAN_AFTER_VIOLATIONS=3)
    client = app.test_client()
    create_user(app, "hank")
    statuses = [
        client.post("/auth/login", json={"username": "hank", "password": "wrong password"}).status_code
        for _ in range(5)
    ]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[-1] == 403  # banned
    resp = client.post("/auth/login", json={"username": "hank", "password": PASSWORD})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "banned"


def test_bodies_go_through_the_one_parser_and_the_declared_params(app: Any) -> None:
    """The routes are @protect-ed: SPEC §3 body rules, declared parameters, unknown ones ignored."""
    client = app.test_client()
    create_user(app, "ivan")
    twice = client.post(
        "/auth/login", data='{"username": "ivan", "username": "x", "password": "p"}', content_type="application/json"
    )
    assert twice.status_code == 400 and "more than once" in twice.get_json()["error"]["message"]
    nul = client.post("/auth/login", json={"username": "ivan\u0000", "password": PASSWORD})
    assert nul.status_code == 400 and "NUL" in nul.get_json()["error"]["message"]
    wrong = client.post("/auth/login", json={"username": 7, "password": ""})
    assert wrong.status_code == 400 and wrong.get_json()["error"]["code"] == "validation_error"
    assert {d["param"] for d in wrong.get_json()["error"]["details"]} == {"username", "password"}
    # parameters the route does not declare are ignored, as they always were
    ok = client.post("/auth/login?next=/home", json={"username": "ivan", "password": PASSWORD, "remember": True})
    assert ok.status_code == 200 and ok.get_json()["token_type"] == "Bearer"
    no_email = client.post("/auth/register", json={"username": "judy", "password": PASSWORD, "email": None})
    assert no_email.status_code == 201
    bad_email = client.post("/auth/register", json={"username": "kate", "password": PASSWORD, "email": "nope"})
    assert bad_email.status_code == 400 and bad_email.get_json()["error"]["details"][0]["param"] == "email"


def test_admins_create_keys_for_others_by_id_or_name(app: Any) -> None:
    client = app.test_client()
    create_user(app, "root", admin=True)
    other = create_user(app, "leo")
    root, leo = login(client, "root")["access_token"], login(client, "leo")["access_token"]
    for ref in (other.id, "leo", str(other.id)):
        made = client.post("/auth/api-keys", json={"name": "for-leo", "owner_id": ref}, headers=bearer(root))
        assert made.status_code == 201, made.get_json()
    keys = client.get("/auth/api-keys", headers=bearer(leo)).get_json()["api_keys"]
    assert [k["name"] for k in keys] == ["for-leo"] * 3
    refused = client.post("/auth/api-keys", json={"name": "x", "owner_id": "root"}, headers=bearer(leo))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    no_expiry = client.post("/auth/api-keys", json={"name": "y", "expires_in_days": None}, headers=bearer(leo))
    assert no_expiry.status_code == 201 and no_expiry.get_json()["api_key"]["expires_at"] is None


def test_openapi_entries_come_from_the_declarations(app: Any) -> None:
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    login_op = paths["/auth/login"]["post"]
    assert login_op["security"] == [] and set(login_op["responses"]) == {"200", "default"}
    body = login_op["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["username", "password"]
    assert set(body["properties"]) == {"username", "password", "device_token"}
    assert body["properties"]["device_token"]["writeOnly"] is True  # hardening 4: a device token
    register = paths["/auth/register"]["post"]
    assert set(register["responses"]) == {"201", "default"}
    props = register["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["password"] == {"type": "string", "minLength": 8, "maxLength": 256}
    assert props["username"]["pattern"] and props["email"]["format"] == "email"
    for path, method in [("/auth/me", "get"), ("/auth/logout", "post"), ("/auth/api-keys/{key_id}", "delete")]:
        assert paths[path][method]["security"] == [{"bearerAuth": []}], path
    assert "owner_id" in paths["/auth/api-keys"]["post"]["description"]
