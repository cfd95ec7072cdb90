"""One real server for the end-to-end tests: gunicorn (2 sync workers) over deploy/gunicorn.conf.py.

The server is started once per session with its own SQLite database, secrets directory,
metrics directory and Redis key prefix (DB 9), an admin and a normal user created through the
CLI beforehand; it is stopped with SIGTERM at the end and must exit with status 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

ADMIN = ("e2e_admin", "admin-password-e2e")
USER = ("e2e_user", "user-password-e2e")
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
FLASK = str(Path(sys.executable).parent / "flask")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 25) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise


def _login(url: str, username: str, password: str) -> str:
    resp = requests.post(f"{url}/auth/login", json={"username": username, "password": password}, timeout=10)
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["access_token"]
    return token


def server_env(tmp: Path, redis_url: str, prefix: str, port: int) -> dict[str, str]:
    (tmp / "secrets").mkdir(exist_ok=True)
    (tmp / "metrics").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "APP_ENV": "test",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GUNICORN_WORKER_CLASS": "sync",
        "GUNICORN_WORKERS": "2",
        "DATABASE_URL": f"sqlite:///{tmp / 'keel.db'}",
        "SECRETS_DIR": str(tmp / "secrets"),
        # test keeps generated keys in memory: both workers and the CLI must share one JWT key.
        "JWT_SECRET_KEY": "e2e-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "API_KEY_PEPPER": "e2e-pepper-" + uuid.uuid4().hex,
        "ACTIONS_DIR": str(ROOT / "actions"),
        "MODULES_DIR": str(ROOT / "modules"),
        "ACTIONS_RELOAD_INTERVAL": "0",
        "REDIS_URL": f"{redis_url.rstrip('/')}/9",
        "REDIS_KEY_PREFIX": prefix,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        # Generated requests must meet the contract, not the limits: generous limits, no bans.
        "RATE_LIMIT_IP": "100000/minute",
        "RATE_LIMIT_USER": "100000/minute",
        "RATE_LIMIT_API_KEY": "100000/minute",
        "RATE_LIMIT_LOGIN": "100000/minute",
        "BAN_AFTER_VIOLATIONS": "1000000",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_GRACEFUL_TIMEOUT": "10",
    }
    for key in ("VAULT_ADDR", "VAULT_TOKEN", "MONGODB_URL", "DATABASE_READ_URL", "SOCKETIO_MESSAGE_QUEUE"):
        env.pop(key, None)
    return env


def start_server(env: dict[str, str], log: Path) -> Server:
    url = f"http://127.0.0.1:{env['PORT']}"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [GUNICORN, "-c", "deploy/gunicorn.conf.py", "app:app"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )
    server = Server(url=url, proc=proc, log=log, env=env)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"gunicorn did not answer /healthz within 40 s:\n{server.log_tail()}")


def create_user(env: dict[str, str], username: str, password: str, admin: bool = False) -> None:
    cmd = [FLASK, "--app", "app", "users", "create", username, "--password-stdin"] + (["--admin"] if admin else [])
    done = subprocess.run(cmd, cwd=ROOT, env=env, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[Server]:
    import redis

    tmp = tmp_path_factory.mktemp("e2e")
    prefix = f"keel-e2e-{uuid.uuid4().hex[:8]}:"
    env = server_env(tmp, redis_server_url, prefix, free_port())
    create_user(env, *ADMIN, admin=True)
    create_user(env, *USER)
    srv = start_server(env, tmp / "gunicorn.log")
    try:
        srv.tokens["admin"] = _login(srv.url, *ADMIN)
        srv.tokens["user"] = _login(srv.url, *USER)
        yield srv
    finally:
        status = srv.stop()
        client = redis.Redis.from_url(env["REDIS_URL"])
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    assert status == 0, f"gunicorn exited with {status} after SIGTERM:\n{srv.log_tail()}"
    assert "Traceback" not in srv.log.read_text(errors="replace"), srv.log_tail(8000)
