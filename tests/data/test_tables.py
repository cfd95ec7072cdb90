"""Framework tables: declared by their managers, created only by ``am.db.create_all()``.

- No manager creates its own table in ``init_app``: with ``DB_AUTO_CREATE=False`` the
  database stays empty until ``flask db init``, which creates every declared table.
- An app whose database is down still starts; ``/health`` says so and what needs the
  database answers 503 (not 500).
- The tables of users, refresh families, revocations, API keys and bans round-trip on SQLite
  and PostgreSQL (identity ids, sub-second times).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

FRAMEWORK = {
    "users",
    "auth_revocations",
    "auth_refresh_families",
    "api_keys",
    "keel_bans",
    "keel_state",
    "keel_state_history",
}
PASSWORD = "correct horse battery"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_no_manager_creates_its_own_tables(make_app: Callable[..., Any]) -> None:
    app = make_app(DB_AUTO_CREATE=False)
    db = app.extensions["keel"].db
    assert FRAMEWORK | {"tasks", "task_comments"} <= set(db.metadata.tables)
    assert sa.inspect(db.sql).get_table_names() == []  # declared only, nothing created at init
    result = app.test_cli_runner().invoke(args=["db", "init"])
    assert result.exit_code == 0, result.output
    assert set(db.metadata.tables) == set(sa.inspect(db.sql).get_table_names())


def test_app_starts_with_the_database_down(make_app: Callable[..., Any]) -> None:
    # A token from a working app with the same signing key.
    keys = {"JWT_SECRET_KEY": "k" * 48, "API_KEY_PEPPER": "p" * 32}
    issuer = make_app(**keys).test_client()
    assert issuer.post("/auth/register", json={"username": "alice", "password": PASSWORD}).status_code == 201
    token = issuer.post("/auth/login", json={"username": "alice", "password": PASSWORD}).get_json()["access_token"]

    url = f"postgresql+psycopg2://keel:unused@127.0.0.1:{_closed_port()}/keel"
    started = time.monotonic()
    app = make_app(DATABASE_URL=url, DB_CONNECT_TIMEOUT=1, **keys)
    assert time.monotonic() - started < 10
    client = app.test_client()

    health = client.get("/health")
    body = health.get_json()
    assert health.status_code == 503
    assert body["status"] == "unhealthy" and body["managers"]["db"]["status"] == "unhealthy"

    login = client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 503, login.get_json()
    assert login.get_json()["error"]["code"] == "service_unavailable"

    # An action with a valid token: checking the token's revocation needs the database.
    listed = client.get("/actions/list_tasks", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 503, listed.get_json()
    assert listed.get_json()["error"]["code"] == "service_unavailable"


def test_framework_tables_round_trip(make_app: Callable[..., Any], db_config: dict[str, Any]) -> None:
    app = make_app(**db_config)
    am = app.extensions["keel"]
    db = am.db
    assert FRAMEWORK <= set(sa.inspect(db.sql).get_table_names())

    users = am.jwt.users
    alice = users.create("alice", PASSWORD, email="alice@example.com", roles=("user", "admin"))
    bob = users.create("bob01", PASSWORD)
    assert bob.id == alice.id + 1  # identity ids
    assert users.get(alice.id) == alice and users.verify_password("alice", PASSWORD) == alice
    assert abs(alice.created_at - time.time()) < 60 and alice.created_at != int(alice.created_at)

    pair = am.jwt.issue_pair(alice)
    rotated = am.jwt.refresh(pair["refresh_token"])  # compare-and-set on auth_refresh_families
    access = am.jwt.decode(rotated["access_token"], "access")
    am.jwt.logout(access)  # rows in auth_revocations (jti and family)
    revocations = db.metadata.tables["auth_revocations"]
    families = db.metadata.tables["auth_refresh_families"]
    with db.sql.connect() as conn:
        denied = conn.execute(sa.select(revocations).order_by(revocations.c.id)).all()
        family = conn.execute(sa.select(families).where(families.c.fam == access["fam"])).one()
    assert [(r.kind, r.value) for r in denied] == [("jti", access["jti"]), ("fam", access["fam"])]
    assert denied[1].id == denied[0].id + 1 and denied[0].expires_at > time.time()
    assert family.user_id == alice.id and family.revoked_at is not None and family.rotated_at >= family.created_at

    created = am.api_keys.create("ci", ["tasks:read"], owner_id=alice.id, expires_in_days=1)
    principal = am.api_keys.authenticate(created["key"])
    record = am.api_keys.get(created["api_key"]["id"])
    assert record is not None and record.scopes == ("tasks:read",) and record.owner_id == alice.id
    assert record.expires_at is not None and 86_000 < record.expires_at - record.created_at <= 86_400
    assert "tasks:read" in principal.scopes

    am.limiter.ban("ip", "203.0.113.9", 60, actor="test")
    row = am.limiter.records.get("ip", "203.0.113.9")
    assert row is not None and row["actor"] == "test" and 50_000 < row["until_ms"] - row["created_ms"] <= 60_000
    am.limiter.lift_ban("ip", "203.0.113.9", actor="test")
    assert am.limiter.records.get("ip", "203.0.113.9") is None
