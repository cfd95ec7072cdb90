"""The production entry point: gunicorn with deploy/gunicorn.conf.py (gevent), SIGTERM disposal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port


@pytest.mark.slow
def test_gunicorn_serves_and_sigterm_disposes_managers_in_reverse(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "actions").mkdir()
    env = {
        **os.environ,
        "APP_ENV": "test",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'keel.db'}",
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "ACTIONS_DIR": str(tmp_path / "actions"),
        "ACTIONS_RELOAD_INTERVAL": "0",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    for key in ("REDIS_URL", "VAULT_ADDR", "MONGODB_URL"):
        env.pop(key, None)
    out = tmp_path / "gunicorn.log"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "app:app"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    body = resp.read()
                    request_id = resp.headers["X-Request-ID"]
                break
            except OSError:
                time.sleep(0.1)
        assert body == b'{"status":"ok"}\n', out.read_text()[-3000:]
        assert request_id
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = out.read_text()
    assert "Booting worker with pid" in log and "gevent" in log.lower()
    disposing = next(line for line in log.splitlines() if "disposing managers:" in line)
    order = disposing.split("disposing managers:")[1].strip().split(", ")
    assert order[0] == "modules" and order[-2:] == ["services", "hooks"], disposing
    assert "keel disposed (worker" in log
