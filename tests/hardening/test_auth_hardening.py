"""Hardening (issue 12) items 6 and 7: a missing or disabled user is revoked on every path;
usernames are unique after NFKC normalisation and case folding.

Through the public surface (HTTP with Flask's test client, the CLI), on SQLite and on
PostgreSQL + Redis. What an operator does by hand is done with SQL on a connection of its own.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.dialects import oracle, postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from core.auth.revocation import DB_CHECK_CACHE_TTL, USERS_SYNC_INTERVAL
from core.auth.users import add_username_key_ddl, by_username_query, fingerprint_query, users_table
from tests.auth.conftest import PASSWORD, assert_unauthorized, bearer, login
from tests.conftest import throwaway_database
from tests.hardening.flask_cli import run_flask

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite", "postgresql+redis"]
API_KEY_CACHE_TTL = 1.0
ACTION = "/actions/module_status/system"  # auth: any — users and API keys


@pytest.fixture
def settings(request: pytest.FixtureRequest, base_config: dict[str, Any]) -> dict[str, Any]:
    """The settings of every app of a test on ``request.param``'s backend (shared keys, so
    that two apps act as two workers of one deployment)."""
    shared: dict[str, Any] = {
        "JWT_SECRET_KEY": "k" * 48,
        "API_KEY_PEPPER": "p" * 48,
        "API_KEY_CACHE_TTL": API_KEY_CACHE_TTL,
        "RATE_LIMIT_LOGIN": "1000/minute",
        "BAN_AFTER_VIOLATIONS": 1000,
    }
    if request.param == "sqlite":
        return {**shared, "DATABASE_URL": base_config["DATABASE_URL"]}
    return {**shared, **request.getfixturevalue("pg_config"), **request.getfixturevalue("redis_config")}


def _bound(settings: dict[str, Any]) -> float:
    """How long a change made by hand in the database may take to be refused: the database
    path's reuse of its last answer and the API key cache without Redis; the users' sync
    interval with it."""
    if settings.get("REDIS_URL"):
        return 2 * USERS_SYNC_INTERVAL + 1
    return DB_CHECK_CACHE_TTL + API_KEY_CACHE_TTL + 1


def _operator(url: str, statement: str, **params: Any) -> int:
    """Run SQL as an operator would, outside Keel; the number of rows it changed."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            return int(conn.execute(sa.text(statement), params).rowcount)
    finally:
        engine.dispose()


def _register(client: Any, username: str, password: str = PASSWORD) -> Any:
    return client.post("/auth/register", json={"username": username, "password": password})


def _user(client: Any, username: str) -> tuple[int, dict[str, Any]]:
    """Register ``username`` and log in: its id and its token pair."""
    created = _register(client, username)
    assert created.status_code == 201, created.get_json()
    return int(created.get_json()["user"]["id"]), login(client, username)


def _api_key(client: Any, token: str) -> str:
    resp = client.post("/auth/api-keys", json={"name": "ci", "scopes": []}, headers=bearer(token))
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["key"])


def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {seconds:.1f} s"
        time.sleep(0.1)


def _refused(client: Any, headers: dict[str, str]) -> bool:
    return all(client.get(path, headers=headers).status_code == 401 for path in (ACTION, "/auth/me"))


# -- item 6: a missing or disabled user is revoked on every path ----------------------------------


@pytest.mark.parametrize("settings", BACKENDS, indirect=True)
def test_item_06_a_user_deleted_by_hand_in_the_database_is_refused_on_every_path(
    make_app: Any, settings: dict[str, Any]
) -> None:
    app = make_app(**settings)
    client = app.test_client()
    user_id, pair = _user(client, "dora")
    key = _api_key(client, pair["access_token"])
    _user(client, "eve")  # another user, unaffected
    eve = login(client, "eve")
    for headers in (bearer(pair["access_token"]), {"X-API-Key": key}):
        assert client.get(ACTION, headers=headers).status_code == 200
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200

    # There is no user-deletion API: an operator deletes the row.
    assert _operator(settings["DATABASE_URL"], "DELETE FROM users WHERE id = :id", id=user_id) == 1

    _until(lambda: _refused(client, bearer(pair["access_token"])), _bound(settings), "the deleted user's token refused")
    _until(
        lambda: client.get(ACTION, headers={"X-API-Key": key}).status_code == 401,
        _bound(settings),
        "the deleted user's API key refused",
    )
    for _ in range(3):  # and it stays refused, on every path
        assert_unauthorized(client.get(ACTION, headers=bearer(pair["access_token"])))
        assert_unauthorized(client.get("/auth/me", headers=bearer(pair["access_token"])))
        assert_unauthorized(client.get(ACTION, headers={"X-API-Key": key}))
        assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}))
    assert client.get("/auth/me", headers=bearer(eve["access_token"])).status_code == 200
    assert client.post("/auth/refresh", json={"refresh_token": eve["refresh_token"]}).status_code == 200


def test_item_06_redis_holding_no_state_for_a_user_is_not_version_0(
    make_app: Any, pg_config: dict[str, Any], redis_config: dict[str, Any], redis_url: str, redis_prefix: str
) -> None:
    """The root cause: Redis held the synced deny-list but no version for a user, read as 0,
    so the token of a user who no longer exists was valid. Now the database decides at once."""
    app = make_app(**pg_config, **redis_config, RATE_LIMIT_LOGIN="1000/minute")
    client = app.test_client()
    gone_id, gone = _user(client, "dora")
    kept_id, kept = _user(client, "eve")
    for pair in (gone, kept):
        assert client.get(ACTION, headers=bearer(pair["access_token"])).status_code == 200
    server = redis.Redis.from_url(redis_url)
    try:
        # A Redis that never held these users' states (filled by an older Keel, or a write
        # lost while it was down), and one of the users deleted by hand.
        assert server.delete(f"{redis_prefix}auth:ver:{gone_id}", f"{redis_prefix}auth:ver:{kept_id}") == 2
        _operator(pg_config["DATABASE_URL"], "DELETE FROM users WHERE id = :id", id=gone_id)
        assert_unauthorized(client.get(ACTION, headers=bearer(gone["access_token"])))  # at once
        assert client.get(ACTION, headers=bearer(kept["access_token"])).status_code == 200
        # Redis learnt the database's answers: the next requests need no database.
        assert server.get(f"{redis_prefix}auth:ver:{kept_id}") == b"0"
        assert int(server.get(f"{redis_prefix}auth:ver:{gone_id}") or 0) < 0
    finally:
        server.close()
    assert_unauthorized(client.get(ACTION, headers=bearer(gone["access_token"])))


@pytest.mark.parametrize("settings", BACKENDS, indirect=True)
def test_item_06_an_api_key_of_a_disabled_owner_is_refused_by_every_worker(
    make_app: Any, settings: dict[str, Any]
) -> None:
    one, two = make_app(**settings), make_app(**settings)  # two workers of one deployment
    c1, c2 = one.test_client(), two.test_client()
    _user_id, pair = _user(c1, "dora")
    key = {"X-API-Key": _api_key(c1, pair["access_token"])}
    assert c1.get(ACTION, headers=key).status_code == 200
    assert c2.get(ACTION, headers=key).status_code == 200  # both hold the key's record now

    disabled = one.test_cli_runner().invoke(args=["users", "disable", "DORA"])
    assert disabled.exit_code == 0, disabled.output
    assert_unauthorized(c1.get(ACTION, headers=key))  # the worker that disabled: at once
    if settings.get("REDIS_URL"):
        assert_unauthorized(c2.get(ACTION, headers=key))  # every worker: at once
    else:
        _until(lambda: c2.get(ACTION, headers=key).status_code == 401, API_KEY_CACHE_TTL + 1, "refused by worker 2")
    assert_unauthorized(c2.get(ACTION, headers=bearer(pair["access_token"])))

    enabled = one.test_cli_runner().invoke(args=["users", "enable", "dora"])
    assert enabled.exit_code == 0, enabled.output
    assert c1.get(ACTION, headers=key).status_code == 200
    _until(lambda: c2.get(ACTION, headers=key).status_code == 200, API_KEY_CACHE_TTL + 1, "accepted by worker 2")


@pytest.mark.parametrize("settings", BACKENDS, indirect=True)
def test_item_06_a_user_disabled_by_hand_is_refused(make_app: Any, settings: dict[str, Any]) -> None:
    """An operator's ``UPDATE users SET active = false`` (no version bump) refuses the user's
    tokens and keys like ``flask users disable``."""
    app = make_app(**settings)
    client = app.test_client()
    user_id, pair = _user(client, "dora")
    key = {"X-API-Key": _api_key(client, pair["access_token"])}
    assert client.get(ACTION, headers=key).status_code == 200
    _operator(settings["DATABASE_URL"], "UPDATE users SET active = :off WHERE id = :id", off=False, id=user_id)
    token = bearer(pair["access_token"])
    _until(lambda: _refused(client, token), _bound(settings), "the disabled user's token refused")
    _until(lambda: client.get(ACTION, headers=key).status_code == 401, _bound(settings), "the API key refused")
    assert client.post("/auth/login", json={"username": "dora", "password": PASSWORD}).status_code == 401


def test_item_06_a_deleted_users_id_is_never_given_to_the_next_user(make_app: Any, base_config: Any) -> None:
    """SQLite gives the next row the id of a deleted newest row unless told otherwise: the
    deleted user's tokens and keys would have become the new user's."""
    app = make_app(RATE_LIMIT_LOGIN="1000/minute")
    client = app.test_client()
    _user(client, "alice")
    gone_id, gone = _user(client, "dora")
    _operator(base_config["DATABASE_URL"], "DELETE FROM users WHERE id = :id", id=gone_id)
    new_id, _pair = _user(client, "mallory")
    assert new_id > gone_id
    assert_unauthorized(client.get(ACTION, headers=bearer(gone["access_token"])))


_LEGACY_USERS = [("alice", "admin,user"), ("ALICE", "user"), ("bob", "user")]


def _legacy_database(url: str, rows: list[tuple[str, str]] = _LEGACY_USERS) -> dict[str, int]:
    """A ``users`` table as Keel created it before usernames had a key (and, on SQLite, before
    ids were never reused), with ``rows``; their ids by name."""
    metadata = sa.MetaData()
    users = sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("roles", sa.String(512), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("token_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            for name, roles in rows:
                conn.execute(
                    sa.insert(users).values(
                        username=name,
                        password_hash=hasher.hash(f"{name}-password"),
                        roles=roles,
                        active=True,
                        token_version=0,
                        created_at=time.time(),
                        updated_at=time.time(),
                    )
                )
        with engine.connect() as conn:
            return {r.username: int(r.id) for r in conn.execute(sa.select(users.c.id, users.c.username))}
    finally:
        engine.dispose()


def test_item_06_a_reused_id_on_an_older_sqlite_table_inherits_no_token_and_no_key(
    make_app: Any, base_config: Any
) -> None:
    """On a table created before ids were never reused, a new user may get a deleted user's
    id: the deleted user's refresh families and API keys are revoked at the creation."""
    url = base_config["DATABASE_URL"]
    ids = _legacy_database(url, [("alice", "user")])
    app = make_app(RATE_LIMIT_LOGIN="1000/minute")
    client = app.test_client()
    gone_id, gone = _user(client, "dora")
    key = {"X-API-Key": _api_key(client, gone["access_token"])}
    assert gone_id == ids["alice"] + 1
    _operator(url, "DELETE FROM users WHERE id = :id", id=gone_id)
    new_id, fresh = _user(client, "mallory")
    assert new_id == gone_id  # SQLite reused it: the table predates AUTOINCREMENT
    for _ in range(2):
        assert_unauthorized(client.get(ACTION, headers=bearer(gone["access_token"])))
        assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": gone["refresh_token"]}))
        assert_unauthorized(client.get(ACTION, headers=key))
    me = client.get("/auth/me", headers=bearer(fresh["access_token"]))
    assert me.status_code == 200 and me.get_json()["user"]["username"] == "mallory"
    listed = client.get("/auth/api-keys", headers=bearer(fresh["access_token"])).get_json()["api_keys"]
    assert listed == []  # the deleted user's keys are not the new user's


# -- item 7: usernames unique after NFKC normalisation and case folding --------------------------


@pytest.mark.parametrize("settings", BACKENDS, indirect=True)
def test_item_07_usernames_are_unique_after_nfkc_and_case_folding(make_app: Any, settings: dict[str, Any]) -> None:
    app = make_app(**settings)
    client = app.test_client()
    runner = app.test_cli_runner()
    for name in ("alice", "root", "Bob"):
        assert _register(client, name).status_code == 201
    for taken in ("ALICE", "Alice", "Root", "ROOT", "bob", "BOB"):
        resp = _register(client, taken)
        assert resp.status_code == 409, (taken, resp.get_json())
        assert resp.get_json()["error"]["code"] == "conflict"
    taken = runner.invoke(args=["users", "create", "ROOT", "--password-stdin"], input="another-password\n")
    assert taken.exit_code != 0 and "already taken" in taken.output, taken.output
    # A compatibility form is no display form (the register route documents the pattern), and
    # could never be another account: its key is the ASCII name's.
    assert _register(client, "ａｌｉｃｅ").status_code == 400
    fullwidth = runner.invoke(args=["users", "create", "ｃａｒｏｌ", "--password-stdin"], input=f"{PASSWORD}\n")
    assert fullwidth.exit_code != 0 and "Traceback" not in fullwidth.output

    # The display form is kept; login and the CLI accept any case and compatibility form.
    for typed, shown in (("ALICE", "alice"), ("ａｌｉｃｅ", "alice"), ("bob", "Bob"), ("ＢＯＢ", "Bob")):
        token = login(client, typed)["access_token"]
        me = client.get("/auth/me", headers=bearer(token)).get_json()["user"]
        assert me["username"] == shown, (typed, me)
    listing = runner.invoke(args=["users", "list"]).output
    assert "Bob" in listing and "BOB" not in listing
    assert runner.invoke(args=["users", "disable", "BOB"]).exit_code == 0
    assert client.post("/auth/login", json={"username": "Bob", "password": PASSWORD}).status_code == 401


def _flask_cli(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_flask(tmp_path, *args, timeout=120, DATABASE_URL=url, JWT_SECRET_KEY="k" * 48, API_KEY_PEPPER="p" * 48)


@pytest.fixture(params=["sqlite", "postgresql"])
def legacy_url(request: pytest.FixtureRequest, base_config: dict[str, Any]) -> Iterator[str]:
    """A database of its own whose ``users`` table predates the username key."""
    if request.param == "sqlite":
        url = base_config["DATABASE_URL"]
        _legacy_database(url)
        yield url
        return
    request.getfixturevalue("postgres_url")  # skips (or fails under REQUIRE_SERVICES) without a server
    with throwaway_database("keel_legacy") as url:
        _legacy_database(url)
        yield url


def test_item_07_an_older_database_gets_the_username_key_at_start(
    make_app: Any, legacy_url: str, tmp_path: Path
) -> None:
    # Two workers start together on it (two CLI processes): both succeed.
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _i: _flask_cli(legacy_url, tmp_path, "users", "list"), range(2)))
    for result in results:
        assert result.returncode == 0, result.stderr
        assert {"alice", "ALICE", "bob"} <= set(result.stdout.split()), result.stdout

    engine = sa.create_engine(legacy_url)
    try:
        inspector = sa.inspect(engine)
        assert "username_key" in {c["name"] for c in inspector.get_columns("users")}
        unique = [i for i in inspector.get_indexes("users") if i["column_names"] == ["username_key"]]
        assert unique and unique[0]["unique"]
        with engine.connect() as conn:
            keys = dict(conn.execute(sa.text("SELECT username, username_key FROM users")).all())
    finally:
        engine.dispose()
    # The older of the two accounts equal after normalisation keeps the name; the other is
    # reachable by its exact name only (and is logged, to be renamed).
    assert keys["alice"] == "alice" and keys["bob"] == "bob" and keys["ALICE"].startswith("~")

    app = make_app(DATABASE_URL=legacy_url, RATE_LIMIT_LOGIN="1000/minute")  # a third start: nothing to do
    client = app.test_client()
    for typed, password, shown in (
        ("BOB", "bob-password", "bob"),
        ("Alice", "alice-password", "alice"),
        ("ALICE", "ALICE-password", "ALICE"),
    ):
        token = login(client, typed, password)["access_token"]
        assert client.get("/auth/me", headers=bearer(token)).get_json()["user"]["username"] == shown
    assert client.post("/auth/login", json={"username": keys["ALICE"], "password": "ALICE-password"}).status_code == 401
    assert _register(client, "Bob").status_code == 409
    assert _register(client, "aLiCe").status_code == 409
    assert _register(client, "carol").status_code == 201


def _oracle_19c() -> Any:
    dialect = oracle.dialect()
    dialect.server_version_info = (19, 0)
    dialect.supports_native_boolean = False
    return dialect


@pytest.mark.parametrize(
    "dialect",
    [oracle.dialect(), _oracle_19c(), postgresql.dialect(), sqlite.dialect()],
    ids=["oracle", "oracle-19c", "postgresql", "sqlite"],
)
def test_item_06_07_the_new_sql_is_portable(dialect: Any) -> None:
    """The username key's column, lookup and index, and the users' fingerprint, in every
    dialect Keel supports (Oracle has no server here: compiled only)."""
    table = users_table(sa.MetaData())
    ddl = add_username_key_ddl(table, dialect)
    expected = "ADD (username_key VARCHAR2(64 CHAR))" if dialect.name == "oracle" else "ADD COLUMN username_key"
    assert ddl.startswith("ALTER TABLE users ") and expected in ddl
    index = next(i for i in table.indexes if i.name == "uq_users_username_key")
    assert str(CreateIndex(index).compile(dialect=dialect)).startswith("CREATE UNIQUE INDEX uq_users_username_key")
    fingerprint = str(fingerprint_query(table).compile(dialect=dialect))
    lookup = str(by_username_query(table, "Alice").compile(dialect=dialect))
    if dialect.name == "oracle":
        assert "users.active = 1" in fingerprint and "NUMBER(19)" in fingerprint
        assert "FETCH FIRST" in lookup and "BOOLEAN" not in fingerprint + lookup
