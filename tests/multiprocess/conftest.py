"""Real processes: two Keel instances (gunicorn, 2 sync workers each) sharing one PostgreSQL
database, one Redis prefix, the same secrets and the same ACTIONS_DIR.

Started once per session (about 5 s; a second pair without Redis, ``cluster_without_redis``,
once for test_without_redis.py); every test talks to them over HTTP only. Each request
uses a fresh connection (``Connection: close``), so the kernel hands it to either worker.
``TRUSTED_PROXY_COUNT=1``: a test picks its own client IP with ``X-Forwarded-For``, so its
rate limits and bans never touch the other tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, free_port, throwaway_database

ADMIN_PASSWORD = "multiprocess-admin-password"

# Loaded at start; test_reload rewrites reload.yaml, test_limits uses limited.yaml.
RELOAD_YAML = """\
version: 1
module: system
actions:
  mp_info:
    handler: info
    description: {description}
    methods: [GET]
    auth: public
{extra}"""

LIMITED_YAML = """\
version: 1
module: system
actions:
  mp_limited:
    handler: info
    description: Public, 7 per minute per caller.
    methods: [GET]
    auth: public
    rate_limit: "7/minute"
"""
LIMITED_N = 7


@dataclass
class Instance:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, *, token: str | None = None, ip: str | None = None,
                timeout: float = 10, **kwargs: Any) -> requests.Response:
        """One request on a new connection (so either worker may answer)."""
        headers = {"Connection": "close", **kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if ip:
            headers["X-Forwarded-For"] = ip
        return requests.request(method, self.url + path, headers=headers, timeout=timeout, **kwargs)

    def workers(self) -> list[int]:
        """The worker pids of this gunicorn master."""
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]


@dataclass
class Cluster:
    a: Instance
    b: Instance
    actions_dir: Path
    admin_token: str = ""
    instances: list[Instance] = field(default_factory=list)

    def login(self, username: str, password: str, *, on: Instance, ip: str) -> dict[str, Any]:
        resp = on.request("POST", "/auth/login", ip=ip, json={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def new_user(self, *, ip: str) -> dict[str, Any]:
        """Register a fresh user on A and log it in on B: ``{"username", "password", "token", "id"}``."""
        username = f"u{uuid.uuid4().hex[:10]}"
        password = "correct horse battery staple"
        resp = self.a.request("POST", "/auth/register", ip=ip, json={"username": username, "password": password})
        assert resp.status_code == 201, resp.text
        token = self.login(username, password, on=self.b, ip=ip)["access_token"]
        me = self.a.request("GET", "/auth/me", token=token, ip=ip)
        assert me.status_code == 200, me.text
        body = me.json()
        user = body.get("user", body)
        return {"username": username, "password": password, "token": token, "id": user["id"]}


def _server_env(
    tmp: Path, database_url: str, redis_conf: tuple[str, str] | None, worker_class: str = "sync"
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "SECRETS_DIR": str(tmp / "secrets"),
        "ACTIONS_DIR": str(tmp / "actions"),
        "MODULES_DIR": str(ROOT / "modules"),
        "ACTIONS_RELOAD_INTERVAL": "0.2",
        "GUNICORN_WORKER_CLASS": worker_class,
        "GUNICORN_WORKERS": "2",
        "TRUSTED_PROXY_COUNT": "1",
        "RATE_LIMIT_IP": "100000/minute",
        "RATE_LIMIT_USER": "100000/minute",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "WARNING",
    }
    if redis_conf is not None:
        env["REDIS_URL"], env["REDIS_KEY_PREFIX"] = redis_conf
    return env


def _wait_ready(inst: Instance, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert inst.proc is not None
        if inst.proc.poll() is not None:
            break
        try:
            if inst.request("GET", "/ready", timeout=2).status_code == 200 and len(inst.workers()) == 2:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"instance {inst.name} did not become ready:\n{inst.log.read_text()[-4000:]}")


def _stop(inst: Instance) -> None:
    if inst.proc is None or inst.proc.poll() is not None:
        return
    inst.proc.send_signal(signal.SIGTERM)
    try:
        inst.proc.wait(20)
    except subprocess.TimeoutExpired:
        inst.proc.kill()
        inst.proc.wait(10)


def _fresh_database() -> Any:
    """A database of our own (other areas truncate the session's shared one after each test)."""
    return throwaway_database("keel_mp")


@pytest.fixture(scope="session")
def mp_redis(redis_server_url: str) -> Iterator[tuple[str, str]]:
    """(url on DB 9, a unique key prefix); the prefix's keys are deleted at the end."""
    import redis

    url = redis_server_url.rstrip("/") + "/9"
    prefix = f"keeltest:mp{uuid.uuid4().hex[:10]}:"
    yield url, prefix
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def _run_cluster(tmp: Path, redis_conf: tuple[str, str] | None, worker_class: str = "sync") -> Iterator[Cluster]:
    """Two gunicorn instances (2 workers each, sync unless ``worker_class``) on a fresh database,
    sharing ``redis_conf`` (url, prefix) or, with None, no Redis at all."""
    from cryptography.fernet import Fernet

    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "jwt_secret_key").write_text("multiprocess-test-jwt-secret-" + "k" * 40)
    (secrets / "api_key_pepper").write_text("multiprocess-test-pepper-" + "p" * 40)
    (secrets / "encryption_keys").write_text(Fernet.generate_key().decode())
    actions = tmp / "actions"
    actions.mkdir()
    (actions / "reload.yaml").write_text(RELOAD_YAML.format(description="version one", extra=""))
    (actions / "limited.yaml").write_text(LIMITED_YAML)
    bin_dir = Path(sys.executable).parent
    with _fresh_database() as database_url:
        env = _server_env(tmp, database_url, redis_conf, worker_class)
        # The first admin, from the CLI (this also creates the tables before the workers race to).
        made = subprocess.run(
            [str(bin_dir / "flask"), "--app", "app", "users", "create", "admin", "--admin", "--password-stdin"],
            cwd=ROOT, env=env, input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False,
        )
        assert made.returncode == 0, made.stdout + made.stderr

        a = Instance("A", free_port(), tmp / "a.log")
        b = Instance("B", free_port(), tmp / "b.log")
        for inst in (a, b):
            (tmp / f"metrics-{inst.name}").mkdir()
            inst_env = {**env, "PORT": str(inst.port), "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"metrics-{inst.name}")}
            with open(inst.log, "wb") as fh:
                inst.proc = subprocess.Popen(
                    [str(bin_dir / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "app:app"],
                    cwd=ROOT, env=inst_env, stdout=fh, stderr=subprocess.STDOUT,
                )
        try:
            for inst in (a, b):
                _wait_ready(inst)
            c = Cluster(a, b, actions, instances=[a, b])
            c.admin_token = c.login("admin", ADMIN_PASSWORD, on=a, ip="192.0.2.1")["access_token"]
            yield c
        finally:
            for inst in (a, b):
                _stop(inst)
        for inst in (a, b):  # no request ended in an unexpected exception (a 500) on any worker
            log = inst.log.read_text()
            assert "Traceback" not in log, f"instance {inst.name}:\n{log[-4000:]}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, mp_redis: tuple[str, str]) -> Iterator[Cluster]:
    """Two instances sharing PostgreSQL and Redis."""
    with _run_cluster(tmp_path_factory.mktemp("multiprocess"), mp_redis) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_without_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two instances sharing only PostgreSQL (no REDIS_URL): the database is the shared state."""
    with _run_cluster(tmp_path_factory.mktemp("multiprocess-noredis"), None) as c:
        yield c
