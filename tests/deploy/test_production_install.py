"""The production install, as an operator makes it (SPEC §1, §12; issue 11 items 1, 4, 11, 12).

A fresh venv holds ``requirements.txt`` alone, installed offline from ``make wheelhouse`` by
``deploy/install-runtime.sh`` (the Dockerfile's install step). The app directory holds exactly
the files the Dockerfile copies, the environment is the image's, and the server is started with
the image's ENTRYPOINT + CMD (``dumb-init -- gunicorn -c deploy/gunicorn.conf.py app:app``) in
production: keys in a secrets directory, PostgreSQL and Redis, TRUSTED_HOSTS, and the actions
directory laid out as the kubelet lays out the ConfigMap of deploy/k8s.

The tests of this module share that one server and run in order; the last one stops it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, free_port, throwaway_database
from tests.deploy import k8s, monitoring
from tests.deploy.dockerfile import stages

pytestmark = pytest.mark.slow  # builds a venv (and, on the first run, the wheelhouse)

HOST = "keel.test"  # the one trusted host name
RUNTIME = stages(ROOT / "Dockerfile")[-1]
PROBE_ACTION = """\
version: 1
module: system
actions:
  deploy_probe:
    handler: info
    description: Added by a ConfigMap update.
    methods: [GET]
    auth: public
"""


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    app_dir: Path
    env: dict[str, str]
    log: Path
    actions: k8s.ProjectedVolume

    def get(self, path: str, *, host: str = HOST, ip: str = "192.0.2.1", **kwargs: Any) -> requests.Response:
        headers = {"Host": host, "X-Forwarded-For": ip, "Connection": "close", **kwargs.pop("headers", {})}
        timeout = kwargs.pop("timeout", 10)
        return requests.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=timeout, **kwargs)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _copy_image_files(app_dir: Path) -> None:
    """The runtime stage's ``COPY`` instructions, relative to its WORKDIR."""
    for sources, dest in RUNTIME.copies():
        for source in sources:
            src = ROOT / source.rstrip("/")
            target = app_dir / dest / (src.name if dest.endswith("/") and src.is_file() else "")
            if src.is_dir():
                shutil.copytree(src, app_dir / dest.rstrip("/"), dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target if dest.endswith("/") else app_dir / dest)


def _image_env(venv: Path, tmp: Path, port: int) -> dict[str, str]:
    env = {k: v.replace("$PATH", "/usr/bin:/bin") for k, v in RUNTIME.env().items()}
    env["PATH"] = env["PATH"].replace("/opt/venv/bin", str(venv / "bin"))
    env.update({
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "HOST": "127.0.0.1",  # the image binds 0.0.0.0; a test listens on loopback only
        "PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
    })
    return env


def _production_secrets(directory: Path, database_url: str, redis_url: str) -> None:
    from cryptography.fernet import Fernet

    directory.mkdir()
    (directory / "jwt_secret_key").write_text(secrets.token_urlsafe(48))
    (directory / "api_key_pepper").write_text(secrets.token_urlsafe(32))
    (directory / "encryption_keys").write_text(Fernet.generate_key().decode())
    (directory / "database_url").write_text(database_url)
    (directory / "redis_url").write_text(redis_url)


@pytest.fixture(scope="module")
def server(runtime_venv: Path, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("production")
    app_dir = tmp / "app"
    _copy_image_files(app_dir)
    (app_dir / "var").mkdir()
    actions = k8s.ProjectedVolume(tmp / "etc-keel-actions", k8s.load("configmap-actions.yaml")["data"])
    port = free_port()
    env = _image_env(runtime_venv, tmp, port)
    prefix = f"keeltest:deploy{uuid.uuid4().hex[:8]}:"
    env.update({
        "SECRETS_DIR": str(tmp / "run-secrets"),
        "TRUSTED_HOSTS": HOST,
        "TRUSTED_PROXY_COUNT": "1",  # as behind the ingress/nginx; each test picks its client IP
        "ACTIONS_DIR": str(actions.root),
        "ACTIONS_RELOAD_INTERVAL": "0.2",
        "REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_IP": "20/minute",
        "BAN_AFTER_VIOLATIONS": "3",
    })
    assert env["APP_ENV"] == "production"
    command = RUNTIME.exec_form("ENTRYPOINT") + RUNTIME.exec_form("CMD")
    assert command == ["dumb-init", "--", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"]
    command[0] = str(runtime_venv / "bin" / command[0])
    log = tmp / "server.log"
    with throwaway_database("keel_deploy") as database_url:
        _production_secrets(tmp / "run-secrets", database_url, redis_server_url.rstrip("/") + "/9")
        with open(log, "wb") as fh:
            proc = subprocess.Popen(command, cwd=app_dir, env=env, stdout=fh, stderr=subprocess.STDOUT)
        srv = Server(proc, port, app_dir, env, log, actions)
        try:
            _wait_serving(srv)
            yield srv
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            _delete_redis_keys(redis_server_url, prefix)


def _wait_serving(srv: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and srv.proc.poll() is None:
        try:
            if srv.get("/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"the production server did not serve (exit {srv.proc.poll()}):\n{srv.tail()}")


def _delete_redis_keys(redis_server_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_server_url.rstrip("/") + "/9")
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_the_venv_holds_the_runtime_requirements_alone(runtime_venv: Path) -> None:
    out = subprocess.run([str(runtime_venv / "bin" / "pip"), "list", "--format=freeze"],
                         capture_output=True, text=True, check=True, env={"PIP_CONFIG_FILE": os.devnull}).stdout
    installed = {line.split("==")[0].lower().replace("_", "-") for line in out.split()}
    for runtime in ("gunicorn", "gevent", "packaging", "psycogreen", "dumb-init", "flask", "redis", "psycopg2-binary"):
        assert runtime in installed, out
    for dev_only in ("pytest", "ruff", "mypy", "hypothesis", "schemathesis"):
        assert dev_only not in installed, out


def test_production_refuses_a_generated_key(runtime_venv: Path, tmp_path: Path) -> None:
    """The installed runtime keeps the production guard: a Keel-generated development key stops
    the start with one line and exit status 1."""
    from config import GENERATED_MARK

    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "jwt_secret_key").write_text(GENERATED_MARK + "x" * 40)
    (tmp_path / "secrets" / "api_key_pepper").write_text(secrets.token_urlsafe(32))
    env = {"PATH": f"{runtime_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "APP_ENV": "production",
           "SECRETS_DIR": str(tmp_path / "secrets"), "TRUSTED_HOSTS": HOST,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'keel.db'}"}
    result = subprocess.run([str(runtime_venv / "bin" / "python"), "-c", "import app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "keel: cannot start" in result.stderr and "development key generated by Keel" in result.stderr
    assert "Traceback" not in result.stderr


def test_healthz_ready_and_an_action(server: Server) -> None:
    resp = server.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert resp.headers["X-Request-ID"]
    ready = server.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    info = server.get("/actions/system_info")
    assert info.status_code == 200, info.text
    assert info.headers["Content-Type"].startswith("application/json")
    health = server.get("/health").json()
    assert health["managers"]["db"]["status"] == "healthy", health
    assert health["managers"]["redis"]["status"] == "healthy", health
    # TRUSTED_HOSTS is enforced: another Host header is refused before any route
    assert server.get("/actions/system_info", host="evil.example").status_code == 400


def test_the_container_healthcheck_passes(server: Server) -> None:
    """The image's HEALTHCHECK command, run in the image's environment against the server."""
    command = RUNTIME.exec_form("HEALTHCHECK")
    assert command == ["python", "deploy/healthcheck.py"]
    ok = subprocess.run(command, cwd=server.app_dir, env=server.env, capture_output=True, text=True, timeout=10,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    down = {**server.env, "PORT": str(free_port())}  # nothing listens there
    bad = subprocess.run(command, cwd=server.app_dir, env=down, capture_output=True, text=True, timeout=10,
                         check=False)
    assert bad.returncode == 1 and "unreachable" in bad.stderr, bad.stderr


def test_a_configmap_update_reaches_the_pod(server: Server) -> None:
    """``kubectl apply`` of a changed ConfigMap: the kubelet swaps ``..data``; Keel reloads."""
    assert server.get("/actions/deploy_probe", ip="192.0.2.2").status_code == 404
    data = dict(k8s.load("configmap-actions.yaml")["data"])
    server.actions.update({**data, "probe.yaml": PROBE_ACTION})
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        status = server.get("/actions/deploy_probe", ip="192.0.2.3").status_code
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200, server.tail()
    server.actions.update(data)  # and a key removed from the ConfigMap goes away again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and status != 404:
        time.sleep(0.2)
        status = server.get("/actions/deploy_probe", ip="192.0.2.4").status_code
    assert status == 404, server.tail()


def test_every_metric_the_alerts_and_the_dashboard_use_is_exported(server: Server) -> None:
    """Traffic that feeds every metric (a rate limit hit, a ban), then /metrics as Prometheus
    scrapes it (multi-process mode, the pod address as Host is refused, the trusted one is not)."""
    statuses = [server.get("/actions/system_info", ip="198.51.100.77").status_code for _ in range(26)]
    assert statuses[:20] == [200] * 20 and set(statuses[20:]) <= {429, 403} and 403 in statuses, statuses
    resp = server.get("/metrics")
    assert resp.status_code == 200
    exported = monitoring.exported_names(resp.text)
    used = monitoring.used_metric_names()
    assert {"keel_requests_total", "keel_breaker_open", "keel_bans_total"} <= set(used)
    missing = {name: sorted(files) for name, files in used.items()
               if name not in exported and name not in monitoring.SYNTHETIC}
    assert not missing, f"used by the rules/dashboard but not in /metrics: {missing}"
    assert 'keel_breaker_open{dependency="redis"} 0.0' in resp.text


def test_sigterm_stops_the_server_cleanly(server: Server) -> None:
    """SIGTERM to PID 1 of the container (dumb-init): gunicorn stops gracefully, the worker
    disposes the app, everything exits 0."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.tail()
    log = server.log.read_text()
    assert "keel disposed (worker" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
