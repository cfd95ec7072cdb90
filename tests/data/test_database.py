"""DatabaseManager (SPEC §10) on SQLite and PostgreSQL: engines, pools, timeouts, retries,
the read replica, ``flask db init``, health, MongoDB."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import jsonify

from core.managers.database import DatabaseUnavailable, PoolExhausted, StatementTimeout

ROOT = Path(__file__).resolve().parents[2]


def _probe_route(app: Any, fn: Callable[[Any], Any]) -> Any:
    """A plain route that runs ``fn(am)``: errors go through the app's one error boundary."""

    def probe() -> Any:
        return jsonify({"value": fn(app.extensions["keel"])})

    app.add_url_rule("/_probe", "probe", probe)
    return app.test_client()


def test_engine_health_and_pool(make_app: Callable[..., Any], db_config: dict[str, Any]) -> None:
    app = make_app(**db_config)
    db = app.extensions["keel"].db
    assert db.read(lambda c: c.execute(sa.select(sa.literal(7))).scalar()) == 7
    assert db.sql_read is db.sql
    report = app.test_client().get("/health").get_json()["managers"]["db"]
    assert report["status"] == "healthy"
    assert report["backend"] == ("postgresql" if db_config else "sqlite")
    assert report["latency_ms"] >= 0 and report["breaker"]["state"] == "closed"
    assert report["pool"] == {"size": 5, "checked_out": 0, "overflow": 0}
    assert "@" not in str(report) and "password" not in str(report)


def test_sqlite_default_location_directory_is_created(make_app: Callable[..., Any], tmp_path: Path) -> None:
    target = tmp_path / "nested" / "dir" / "keel.db"
    app = make_app(DATABASE_URL=f"sqlite:///{target}")
    assert app.extensions["keel"].db.read(lambda c: c.execute(sa.text("SELECT 1")).scalar()) == 1
    assert target.is_file()


def test_db_init_creates_framework_and_module_tables(make_app: Callable[..., Any], db_config: dict[str, Any]) -> None:
    app = make_app(DB_AUTO_CREATE=False, **db_config)
    db = app.extensions["keel"].db
    declared = set(db.metadata.tables)
    assert {"keel_state", "keel_state_history", "tasks", "task_comments"} <= declared
    mine = [db.metadata.tables[n] for n in ("task_comments", "tasks", "keel_state_history", "keel_state")]
    db.metadata.drop_all(db.sql, tables=mine)  # the session's PostgreSQL database keeps tables
    assert "keel_state" not in sa.inspect(db.sql).get_table_names()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "init"])
    assert result.exit_code == 0, result.output
    assert "keel_state_history" in result.output and "tasks" in result.output
    assert declared <= set(sa.inspect(db.sql).get_table_names())
    again = runner.invoke(args=["db", "init"])
    assert again.exit_code == 0 and "created" not in again.output and "all present" in again.output


def test_pool_exhaustion_is_a_503(make_app: Callable[..., Any], db_config: dict[str, Any]) -> None:
    app = make_app(DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=0.2, **db_config)
    client = _probe_route(app, lambda am: am.db.read(lambda c: c.execute(sa.text("SELECT 1")).scalar()))
    db = app.extensions["keel"].db
    assert client.get("/_probe").get_json() == {"value": 1}
    with db.sql.connect():  # the only connection is taken
        with pytest.raises(PoolExhausted):
            db.read(lambda c: c.execute(sa.text("SELECT 1")).scalar())
        response = client.get("/_probe")
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "service_unavailable"
        assert response.headers["Retry-After"] == "1"
        assert db.pool_status()["checked_out"] == 1
    assert db.breaker.state == "closed"  # a busy pool is not a dead database
    assert client.get("/_probe").status_code == 200


def test_statement_timeout_is_a_503(make_app: Callable[..., Any], pg_config: dict[str, Any]) -> None:
    app = make_app(DB_STATEMENT_TIMEOUT_MS=200, **pg_config)
    client = _probe_route(app, lambda am: am.db.read(lambda c: c.execute(sa.text("SELECT pg_sleep(3)")).scalar()))
    with pytest.raises(StatementTimeout):
        app.extensions["keel"].db.read(lambda c: c.execute(sa.text("SELECT pg_sleep(3)")).scalar())
    response = client.get("/_probe")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "service_unavailable"


def test_reads_are_retried_after_a_dropped_connection_writes_are_not(
    make_app: Callable[..., Any], pg_config: dict[str, Any]
) -> None:
    db = make_app(**pg_config).extensions["keel"].db
    calls: list[int] = []

    def read(conn: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the server drops this connection mid-read
            conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return conn.execute(sa.text("SELECT 42")).scalar()

    assert db.read(read) == 42
    assert len(calls) == 2

    with pytest.raises(DatabaseUnavailable) as info:
        with db.transaction() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
    assert info.value.status == 503
    assert db.read(lambda c: c.execute(sa.text("SELECT 1")).scalar()) == 1  # the pool recovered


def test_read_replica(make_app: Callable[..., Any], pg_config: dict[str, Any]) -> None:
    url = sa.make_url(pg_config["DATABASE_URL"])
    replica = url.set(query={"application_name": "keel_replica"}).render_as_string(hide_password=False)
    app = make_app(DATABASE_READ_URL=replica, **pg_config)
    db = app.extensions["keel"].db
    assert db.sql_read is not db.sql
    name = db.read(lambda c: c.execute(sa.text("SELECT current_setting('application_name')")).scalar(), replica=True)
    assert name == "keel_replica"
    assert app.test_client().get("/health").get_json()["managers"]["db"]["read_replica"]["status"] == "healthy"


def test_replica_down_reads_fall_back_to_the_primary(make_app: Callable[..., Any], pg_config: dict[str, Any]) -> None:
    from tests.conftest import free_port

    dead = sa.make_url(pg_config["DATABASE_URL"]).set(host="127.0.0.1", port=free_port())
    app = make_app(DATABASE_READ_URL=dead.render_as_string(hide_password=False), **pg_config)
    db = app.extensions["keel"].db
    for _ in range(db.read_breaker.threshold):
        with pytest.raises(DatabaseUnavailable):
            with db.sql_read.connect():
                pass
    assert db.read(lambda c: c.execute(sa.text("SELECT 5")).scalar(), replica=True) == 5
    time.sleep(db.read_breaker.probe_interval + 0.05)  # a probe of the (still dead) replica is due
    assert db.read(lambda c: c.execute(sa.text("SELECT 6")).scalar(), replica=True) == 6
    assert db.read_breaker.is_open
    report = app.test_client().get("/health").get_json()["managers"]["db"]
    assert report["status"] == "degraded" and report["read_replica"]["status"] == "unhealthy"


def test_concurrent_create_all_is_safe(make_app: Callable[..., Any], db_config: dict[str, Any]) -> None:
    apps = [make_app(DB_AUTO_CREATE=False, **db_config) for _ in range(4)]
    errors: list[BaseException] = []

    def create(app: Any) -> None:
        try:
            app.extensions["keel"].db.create_all()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert "keel_state" in sa.inspect(apps[0].extensions["keel"].db.sql).get_table_names()


def test_psycogreen_is_installed_under_gevent() -> None:
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import psycopg2.extensions as ext\n"
        "from core.managers.database import install_psycogreen\n"
        "assert ext.get_wait_callback() is None\n"
        "print(install_psycogreen(), ext.get_wait_callback() is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.split() == ["True", "True"], out.stderr
    from core.managers.database import install_psycogreen

    assert install_psycogreen() is False  # no gevent patching in this process


def test_health_reads_the_breakers_and_never_changes_them(
    make_app: Callable[..., Any], pg_config: dict[str, Any]
) -> None:
    from tests.conftest import free_port

    dead = sa.make_url(pg_config["DATABASE_URL"]).set(host="127.0.0.1", port=free_port())
    app = make_app(DATABASE_READ_URL=dead.render_as_string(hide_password=False), **pg_config)
    db = app.extensions["keel"].db
    # (db.health() itself: a request's own database work may close the breaker by design)
    db.breaker.failure()  # one failure, below the threshold
    report = db.health()
    assert report["status"] == "degraded" and report["read_replica"]["status"] == "unhealthy"
    assert db.breaker.health()["consecutive_failures"] == 1  # the primary's ping did not reset it
    assert db.read_breaker.health()["consecutive_failures"] == 0  # the replica's failed ping did not count

    for _ in range(db.breaker.threshold):
        db.breaker.failure()
    for _ in range(3):
        report = db.health()
        assert report["status"] == "unhealthy" and report["error"] == "CircuitOpen"
        assert db.breaker.state == "open"  # reported, never probed by health()


def test_an_open_circuit_closes_without_requests(make_app: Callable[..., Any], db_config: dict[str, Any]) -> None:
    db = make_app(BREAKER_PROBE_INTERVAL=0.1, **db_config).extensions["keel"].db
    for _ in range(db.breaker.threshold):
        db.breaker.failure()
    assert db.breaker.state == "open"
    deadline = time.monotonic() + 3
    while db.breaker.state != "closed" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert db.breaker.state == "closed"  # the background probe found the database answering


def test_sqlite_lock_timeout_is_a_503(make_app: Callable[..., Any], tmp_path: Path) -> None:
    db = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'locked.db'}", DB_STATEMENT_TIMEOUT_MS=0).extensions["keel"].db
    with db.transaction() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    with db.sql.connect() as holder:
        holder.exec_driver_sql("BEGIN IMMEDIATE")  # takes the write lock
        with pytest.raises(StatementTimeout):
            # the wait for the lock ran out (timeout lowered here to keep the test short)
            with db.sql.connect() as conn:
                conn.connection.dbapi_connection.execute("PRAGMA busy_timeout = 100")  # type: ignore[union-attr]
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                conn.commit()
        holder.rollback()
    assert db.breaker.state == "closed"  # a busy database is not a dead one
