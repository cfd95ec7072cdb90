"""Revocation: Redis is the fast path, the database the source of truth (SPEC §6)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from tests.auth.conftest import PASSWORD, assert_unauthorized, bearer, create_user, login


def test_revoked_token_rejected_with_redis_stopped(auth_app: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = auth_app(REDIS_URL=server.url, REDIS_KEY_PREFIX="keeltest:rev:")
    client = app.test_client()
    create_user(app, "ivan")
    revoked = login(client, "ivan")
    alive = login(client, "ivan")
    assert client.get("/auth/me", headers=bearer(revoked["access_token"])).status_code == 200
    assert client.post("/auth/logout", headers=bearer(revoked["access_token"])).status_code == 200
    assert_unauthorized(client.get("/auth/me", headers=bearer(revoked["access_token"])))

    server.stop()
    # Redis is gone: the database answers — the revoked token stays refused, the other works.
    for _ in range(3):
        assert_unauthorized(client.get("/auth/me", headers=bearer(revoked["access_token"])))
        assert client.get("/auth/me", headers=bearer(alive["access_token"])).status_code == 200

    # Revoked while Redis is down, then Redis comes back *empty*: still refused.
    assert client.post("/auth/logout-all", headers=bearer(alive["access_token"])).status_code == 200
    server.start()
    for _ in range(3):
        assert_unauthorized(client.get("/auth/me", headers=bearer(alive["access_token"])))
        assert_unauthorized(client.get("/auth/me", headers=bearer(revoked["access_token"])))
    fresh = login(client, "ivan")
    assert client.get("/auth/me", headers=bearer(fresh["access_token"])).status_code == 200


def test_revocation_is_visible_to_another_instance_at_once(auth_app: Any, pg_config: Any, redis_config: Any) -> None:
    shared = {"JWT_SECRET_KEY": "k" * 48, "API_KEY_PEPPER": "p" * 48, **pg_config, **redis_config}
    one = auth_app(**shared)
    two = auth_app(**shared)
    create_user(one, "judy")
    c1, c2 = one.test_client(), two.test_client()
    pair = login(c1, "judy")
    assert c2.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    assert c1.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 200
    assert_unauthorized(c2.get("/auth/me", headers=bearer(pair["access_token"])))

    other = login(c2, "judy")
    assert c1.get("/auth/me", headers=bearer(other["access_token"])).status_code == 200
    user = one.extensions["keel"].jwt.users.by_username("judy")
    one.extensions["keel"].jwt.revoke_user_tokens(user.id, actor="test")
    assert_unauthorized(c2.get("/auth/me", headers=bearer(other["access_token"])))


def test_redis_and_database_down_is_503(auth_app: Any, redis_server_factory: Any, base_config: Any) -> None:
    server = redis_server_factory()
    app = auth_app(REDIS_URL=server.url)
    client = app.test_client()
    create_user(app, "kate")
    pair = login(client, "kate")
    server.stop()
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200  # the DB answers
    # Take the database away as well: the deny-list cannot be read → 503, never a 200. (A
    # directory in the file's place: SQLite cannot open it, where it would otherwise create a
    # fresh, empty database — a database that answers, not one that is down.)
    db_file = Path(base_config["DATABASE_URL"].removeprefix("sqlite:///"))
    shutil.move(db_file, db_file.with_suffix(".gone"))
    db_file.mkdir()
    app.extensions["keel"].db.sql.dispose()
    time.sleep(0.6)  # past the 0.5 s reuse of the database's last "not revoked" answer
    resp = client.get("/probe/any", headers=bearer(pair["access_token"]))
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["error"]["code"] == "service_unavailable"
    assert "Retry-After" in resp.headers


@pytest.mark.slow
def test_concurrent_refreshes_exactly_one_wins(auth_app: Any, pg_config: Any, redis_config: Any) -> None:
    """16 threads present the same refresh token to a real server on PostgreSQL at once."""
    app = auth_app(**pg_config, **redis_config)
    create_user(app, "leo")
    pair = login(app.test_client(), "leo")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    barrier = threading.Barrier(16)
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def refresh() -> None:
        with requests.Session() as session:
            barrier.wait()
            resp = session.post(f"{url}/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=20)
            with lock:
                results.append((resp.status_code, resp.json()))

    try:
        threads = [threading.Thread(target=refresh) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        server.shutdown()
        thread.join(5)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [401] * 15, statuses
    # The losers presented a spent token: the family is revoked, the winner's pair with it.
    winner = next(body for status, body in results if status == 200)
    client = app.test_client()
    assert_unauthorized(client.get("/auth/me", headers=bearer(winner["access_token"])))
    assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": winner["refresh_token"]}))


def test_without_redis_another_process_sees_a_revocation_within_a_second(auth_app: Any, base_config: Any) -> None:
    shared = {"JWT_SECRET_KEY": "k" * 48, "API_KEY_PEPPER": "p" * 48}
    one, two = auth_app(**shared), auth_app(**shared)  # same SQLite file, no Redis: two "workers"
    create_user(one, "mona")
    c1, c2 = one.test_client(), two.test_client()
    pair = login(c1, "mona")
    assert c2.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    assert c1.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 200
    assert_unauthorized(c1.get("/auth/me", headers=bearer(pair["access_token"])))  # this process: at once
    deadline = time.monotonic() + 1.0
    while c2.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200:
        assert time.monotonic() < deadline, "revocation not visible to the other process within 1 s"
        time.sleep(0.05)


@pytest.mark.parametrize("with_redis", [False, True])
def test_a_revoked_token_on_a_public_endpoint_is_served_as_anonymous(
    auth_app: Any, with_redis: bool, request: pytest.FixtureRequest
) -> None:
    """A stale bearer header must not lock a client out of public routes (login, public
    actions); it never authenticates either."""
    overrides = request.getfixturevalue("redis_config") if with_redis else {}
    app = auth_app(**overrides)
    client = app.test_client()
    create_user(app, "carol")
    tokens = login(client, "carol")
    assert client.post("/auth/logout", headers=bearer(tokens["access_token"])).status_code == 200
    resp = client.get("/probe/public", headers=bearer(tokens["access_token"]))
    assert resp.status_code == 200
    assert resp.get_json()["user"] is None
    assert resp.get_json()["identity"].startswith("ip:")
    assert_unauthorized(client.get("/probe/any", headers=bearer(tokens["access_token"])))
    # and logging in again with the stale header works
    again = client.post("/auth/login", json={"username": "carol", "password": PASSWORD},
                        headers=bearer(tokens["access_token"]))
    assert again.status_code == 200


def test_redis_filled_by_an_older_keel_is_resynced_with_every_users_state(
    auth_app: Any, base_config: Any, redis_config: Any, redis_url: str, redis_prefix: str
) -> None:
    """An older Keel marked Redis synced but kept no state for version-0 users, and a deleted
    user's version stayed behind: the first request of the new version copies the table again
    and finds the stray state by a scan, so the deleted user stays refused."""
    import redis
    import sqlalchemy as sa

    shared = {"JWT_SECRET_KEY": "k" * 48, "API_KEY_PEPPER": "p" * 48, **redis_config}
    old = auth_app(**shared)
    client = old.test_client()
    gone = create_user(old, "dora")
    kept = create_user(old, "eve")
    assert client.post("/auth/logout-all", headers=bearer(login(client, "dora")["access_token"])).status_code == 200
    gone_pair, kept_pair = login(client, "dora"), login(client, "eve")  # dora's tokens carry ver 1
    server = redis.Redis.from_url(redis_url)
    try:
        # What an older Keel left: "synced", and a version only for the bumped user.
        server.delete(*(k for k in server.scan_iter(match=f"{redis_prefix}auth:*") if b":deny:" not in k))
        server.set(f"{redis_prefix}auth:synced", "1")
        server.set(f"{redis_prefix}auth:ver:{gone.id}", "1")
        engine = sa.create_engine(base_config["DATABASE_URL"])
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM users WHERE id = :id"), {"id": gone.id})
        engine.dispose()

        new = auth_app(**shared).test_client()  # a worker of the new version starts
        for _ in range(3):  # the first request asks the database; the next ones Redis
            assert_unauthorized(new.get("/probe/any", headers=bearer(gone_pair["access_token"])))
            assert new.get("/probe/any", headers=bearer(kept_pair["access_token"])).status_code == 200
        assert int(server.get(f"{redis_prefix}auth:ver:{gone.id}") or 0) < 0
        assert server.get(f"{redis_prefix}auth:ver:{kept.id}") == b"0"
    finally:
        server.close()
