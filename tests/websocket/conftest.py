"""Fixtures of the WebSocket tests: real python-socketio clients against real servers.

- ``live``: ``live(**settings)`` builds an app in this process and serves it on a free port
  with Werkzeug's threaded server (Flask-SocketIO's threading mode, simple-websocket): real
  sockets, and coverage of the server code. ``live.redis(**settings)`` adds the test's Redis.
- ``ws_server``: the app under gunicorn with 2 gevent workers (the production setup), started
  once per session, with Redis; its ``twin`` is an app in this process on the same database,
  Redis prefix and keys, to create users, tokens and bans as an admin would.
- :class:`Client`: a python-socketio ``Client`` on the WebSocket transport that records every
  event it receives.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from tests.conftest import ROOT, free_port, unavailable

PASSWORD = "correct horse battery"
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
JS = Path(__file__).resolve().parent / "js"  # the socket.io-client package


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` binary, with ``tests/websocket/js`` installed from its lockfile."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("Node.js and npm are needed for the socket.io-client test")
    assert node is not None and npm is not None
    if not (JS / "node_modules" / "socket.io-client").is_dir():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            unavailable(f"npm ci failed in {JS}: {done.stderr[-2000:]}")
    return node


class Client:
    """A python-socketio client that records what it receives (``events[name]``)."""

    def __init__(self, url: str, auth: Any = None, *, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.auth = auth
        self.headers = headers or {}
        self.sio = socketio.Client(reconnection=False)
        self.events: dict[str, list[Any]] = collections.defaultdict(list)
        self.refusal: Any = None
        self._cond = threading.Condition()
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self._refused)
        self.sio.on("disconnect", lambda *a: self._record("disconnect", a[0] if a else None))

    def _record(self, event: str, data: Any = None) -> None:
        with self._cond:
            self.events[event].append(data)
            self._cond.notify_all()

    def _refused(self, data: Any = None) -> None:
        self.refusal = data

    def connect(self) -> Client:
        self.sio.connect(self.url, auth=self.auth, headers=self.headers, transports=["websocket"], wait_timeout=10)
        return self

    def try_connect(self) -> Any:
        """Connect, expecting a refusal; its ``connect_error`` data (``None``: the transport
        itself was refused or closed)."""
        try:
            self.connect()
        except socketio.exceptions.ConnectionError:
            self.close()
            return self.refusal
        self.close()
        raise AssertionError(f"connection with {str(self.auth)[:80]} was accepted")

    def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        if data is None:
            return self.sio.call(event, timeout=timeout)
        return self.sio.call(event, data, timeout=timeout)

    def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events[event]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = len(self.events[event])
                    raise AssertionError(f"{event}: {got} of {count} after {timeout}s; {dict(self.events)}")
                self._cond.wait(left)
            return list(self.events[event])

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture(autouse=True)
def _quick_websocket_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """websocket-client's ``close()`` waits up to 3 s for the server's closing frame, which the
    Engine.IO client's own reader thread often consumes first: wait 0.2 s at most. And when the
    server dropped the connection first (a refusal, ``force_disconnect``), ``close()`` returns
    without closing the socket, leaving it to the garbage collector (a ResourceWarning in some
    later test): close it."""
    import websocket

    original = websocket.WebSocket.close

    def close(self: Any, status: int = websocket.STATUS_NORMAL, reason: bytes = b"", timeout: float = 0.2) -> None:
        original(self, status, reason, min(timeout, 0.2))
        self.shutdown()

    monkeypatch.setattr(websocket.WebSocket, "close", close)


def handshake(url: str, origin: str) -> int:
    """The HTTP status of a WebSocket handshake sent with exactly this ``Origin`` (101: accepted)."""
    import websocket

    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    try:
        conn = websocket.create_connection(ws_url, origin=origin, timeout=5)
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    conn.close(timeout=0.2)
    return 101


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """``clients(url, auth, headers=None)``: a connected :class:`Client`, closed after the test."""
    made: list[Client] = []

    def factory(url: str, auth: Any, *, headers: dict[str, str] | None = None, connect: bool = True) -> Client:
        client = Client(url, auth, headers=headers)
        made.append(client)
        return client.connect() if connect else client

    yield factory
    for client in made:
        client.close()


# --- in-process servers --------------------------------------------------------------------


@dataclass
class Live:
    app: Any
    url: str
    server: Any
    thread: threading.Thread

    @property
    def am(self) -> Any:
        return self.app.extensions["keel"]

    def user(self, username: str | None = None, *, admin: bool = False) -> dict[str, Any]:
        """A new user and a token pair: ``{"id", "username", "token", "refresh"}``."""
        name = username or f"u{uuid.uuid4().hex[:8]}"
        user = self.am.jwt.users.create(name, PASSWORD, roles=("admin", "user") if admin else ("user",))
        pair = self.am.jwt.issue_pair(user)
        return {"id": user.id, "username": name, "token": pair["access_token"], "refresh": pair["refresh_token"]}


@pytest.fixture
def live(make_app: Callable[..., Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    """``live(**settings)`` → :class:`Live` (threaded Werkzeug server, Flask-SocketIO threading
    mode); ``live.redis(**settings)`` also uses the test's Redis (rooms, queue, limiter)."""
    from werkzeug.serving import make_server

    servers: list[Live] = []

    def start(**settings: Any) -> Live:
        app = make_app(**{"RATE_LIMIT_IP": "100000/minute", "RATE_LIMIT_USER": "100000/minute", **settings})
        port = free_port()
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        live = Live(app, f"http://127.0.0.1:{port}", server, thread)
        servers.append(live)
        return live

    def with_redis(**settings: Any) -> Live:
        return start(**{**request.getfixturevalue("redis_config"), **settings})

    start.redis = with_redis  # type: ignore[attr-defined]
    # The development server logs the bytes a client sends after its WebSocket closed as bad
    # HTTP requests: not what these tests look at.
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.CRITICAL)
    yield start
    werkzeug_log.setLevel(level)
    for live in servers:
        live.server.shutdown()
        live.thread.join(5)


def wait_until(predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# --- the production setup: gunicorn + gevent ---------------------------------------------


@dataclass
class WsServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    twin: Any = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def am(self) -> Any:
        return self.twin.extensions["keel"]

    def user(self, username: str | None = None, *, admin: bool = False) -> dict[str, Any]:
        name = username or f"u{uuid.uuid4().hex[:8]}"
        user = self.am.jwt.users.create(name, PASSWORD, roles=("admin", "user") if admin else ("user",))
        pair = self.am.jwt.issue_pair(user)
        return {"id": user.id, "username": name, "token": pair["access_token"], "refresh": pair["refresh_token"]}

    def metrics(self) -> dict[str, float]:
        """``/metrics`` samples of the ``keel_ws_*`` series (summed over the workers)."""
        text = requests.get(self.url + "/metrics", timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("keel_ws_"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def workers(self) -> list[int]:
        """The worker pids of this gunicorn master."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def gevent_server_env(tmp: Path, redis_url: str, prefix: str, port: int, **extra: str) -> dict[str, str]:
    (tmp / "secrets").mkdir(exist_ok=True)
    (tmp / "metrics").mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "APP_ENV": "test",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GUNICORN_WORKER_CLASS": "gevent",
        "GUNICORN_WORKERS": "2",
        "DATABASE_URL": f"sqlite:///{tmp / 'keel.db'}",
        "SECRETS_DIR": str(tmp / "secrets"),
        "JWT_SECRET_KEY": "ws-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "API_KEY_PEPPER": "ws-pepper-" + uuid.uuid4().hex,
        "ACTIONS_DIR": str(ROOT / "actions"),
        "MODULES_DIR": str(ROOT / "modules"),
        "ACTIONS_RELOAD_INTERVAL": "0",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "TRUSTED_PROXY_COUNT": "1",  # a test picks its client IP with X-Forwarded-For
        "RATE_LIMIT_IP": "100000/minute",
        "RATE_LIMIT_USER": "100000/minute",
        "RATE_LIMIT_API_KEY": "100000/minute",
        "RATE_LIMIT_LOGIN": "100000/minute",
        "WS_MESSAGE_RATE": "200/second",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
        **extra,
    }
    return env


def start_gevent_server(env: dict[str, str], log: Path) -> WsServer:
    url = f"http://127.0.0.1:{env['PORT']}"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([GUNICORN, "-c", "deploy/gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    server = WsServer(url, proc, log, env)
    deadline = time.monotonic() + 60
    workers = int(env.get("GUNICORN_WORKERS", "1"))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(f"{url}/ready", timeout=1).status_code == 200 and len(server.workers()) >= workers:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise AssertionError(f"gunicorn did not become ready:\n{server.log_tail()}")


def stop_server(server: WsServer) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        return server.proc.wait(10)


def twin_app(env: dict[str, str]) -> Any:
    """An app in this process on the server's database, Redis prefix, JWT key and pepper."""
    from core import create_app

    keys = ("APP_ENV", "DATABASE_URL", "SECRETS_DIR", "JWT_SECRET_KEY", "API_KEY_PEPPER", "ACTIONS_DIR",
            "MODULES_DIR", "REDIS_URL", "REDIS_KEY_PREFIX", "TRUSTED_PROXY_COUNT")
    config: dict[str, Any] = {k: env[k] for k in keys}
    config.update(ACTIONS_RELOAD_INTERVAL=0, LOG_LEVEL="WARNING", RATE_LIMIT_IP="100000/minute",
                  RATE_LIMIT_LOGIN="100000/minute")
    return create_app(config, env={})


@pytest.fixture(scope="session")
def ws_server(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[WsServer]:
    import redis

    tmp = tmp_path_factory.mktemp("ws")
    prefix = f"keeltest:ws{uuid.uuid4().hex[:8]}:"
    env = gevent_server_env(tmp, redis_server_url.rstrip("/") + "/9", prefix, free_port())
    twin = twin_app(env)  # creates the tables before the workers start
    server = start_gevent_server(env, tmp / "gunicorn.log")
    server.twin = twin
    try:
        yield server
    finally:
        status = stop_server(server)
        twin.extensions["keel"].dispose()
        client = redis.Redis.from_url(env["REDIS_URL"])
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    assert status == 0, server.log_tail()
    assert "Traceback" not in server.log.read_text(errors="replace"), server.log_tail(8000)
