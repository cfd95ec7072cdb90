"""deploy/nginx.conf in front of two Keel instances, for real (SPEC §7, §12; issue 11 item 2).

The shipped file is rendered for the test by text substitution only (listen address, the two
upstream addresses, pid and log paths, temp paths; each substitution must match exactly once,
so the file under test is the shipped one) and run by Debian's nginx in front of two gunicorn
instances that share one PostgreSQL database and one Redis prefix, with
``TRUSTED_PROXY_COUNT=1`` and ``RATE_LIMIT_IP=20/minute``. Every client connects to nginx from
a loopback address of its own (127.0.0.2, .3, ...): that is the address nginx sees, so each
test has its own client IP — and the tests prove Keel sees exactly it, whatever
``X-Forwarded-For`` the client sends. Loopback is not exempt here (``BAN_EXEMPT_NETWORKS`` empty).

nginx is not installed here: ``.ci/run`` installs it (the test skips without it, and fails under
``REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, throwaway_database, unavailable
from tests.e2e.conftest import Server, create_user, server_env, start_server

pytestmark = pytest.mark.slow  # two gunicorn instances and nginx

CONF = ROOT / "deploy" / "nginx.conf"
HOST = "keel.test"  # the one TRUSTED_HOSTS name: nginx must pass the client's Host through
ADMIN = ("nginx_admin", "admin-password-nginx")
USER = ("nginx_user", "user-password-nginx")
LIMIT = 20


def render(conf: str, tmp: Path, port: int, upstreams: tuple[int, int]) -> str:
    """The shipped conf with the test's addresses and paths; every substitution must apply
    exactly once."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers may write to the 0700 tmp dir
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"    {kind}_temp_path {tmp / kind};\n" for kind in kinds)
    subs = [
        ("worker_processes auto;", user + "worker_processes 1;"),
        ("pid /var/run/nginx.pid;", f"pid {tmp / 'nginx.pid'};"),
        ("error_log /var/log/nginx/error.log", f"error_log {tmp / 'error.log'}"),
        ("access_log /var/log/nginx/access.log", f"access_log {tmp / 'access.log'}"),
        ("http {\n", "http {\n" + temp),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("server app1:8080", f"server 127.0.0.1:{upstreams[0]}"),
        ("server app2:8080", f"server 127.0.0.1:{upstreams[1]}"),
    ]
    for old, new in subs:
        assert conf.count(old) == 1, f"deploy/nginx.conf: expected {old!r} exactly once"
        conf = conf.replace(old, new)
    return conf


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.body.get("error", {}).get("code", "")) if self.status >= 400 else ""


def call(port: int, method: str, path: str, *, source: str = "127.0.0.1", token: str | None = None,
         headers: dict[str, str] | None = None, body: Any = None, raw: bytes | None = None) -> Reply:
    """One request on a new connection from the loopback address ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    sent = {"Host": HOST, "Connection": "close", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = raw
    if body is not None:
        data, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        text = resp.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        parsed = {"raw": text.decode(errors="replace")}
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed if isinstance(parsed, dict) else {})


@dataclass
class Proxy:
    port: int
    a: Server
    b: Server
    upstreams: tuple[int, int]
    access_log: Path
    admin_token: str

    def via(self, method: str, path: str, **kwargs: Any) -> Reply:
        return call(self.port, method, path, **kwargs)

    def direct(self, server: Server, method: str, path: str, *, ip: str, **kwargs: Any) -> Reply:
        """Straight to one instance (bypassing nginx), as client ``ip`` (TRUSTED_PROXY_COUNT=1
        trusts the last X-Forwarded-For hop: the test plays nginx there)."""
        headers = {"X-Forwarded-For": ip, **kwargs.pop("headers", {})}
        return call(int(server.env["PORT"]), method, path, headers=headers, **kwargs)

    def logged(self, text: str, timeout: float = 3) -> None:
        """Wait for ``text`` in nginx's access log (written just after the response is sent)."""
        deadline = time.monotonic() + timeout
        while text not in self.access_log.read_text():
            assert time.monotonic() < deadline, f"{text!r} not in nginx's access log"
            time.sleep(0.05)

    def login(self, username: str, password: str, *, on: Server, ip: str) -> str:
        resp = self.direct(on, "POST", "/auth/login", ip=ip, body={"username": username, "password": password})
        assert resp.status == 200, resp.body
        return str(resp.body["access_token"])


def _nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        unavailable("`nginx` is not installed (apt-get install nginx; .ci/run does)")
    assert found is not None
    return found


def _check(nginx: str, conf: Path) -> None:
    done = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[Proxy]:
    import redis

    nginx = _nginx()
    tmp = tmp_path_factory.mktemp("nginx")
    prefix = f"keel-nginx-{uuid.uuid4().hex[:8]}:"
    ports = (free_port(), free_port())
    with throwaway_database("keel_nginx") as database_url:
        env = server_env(tmp, redis_server_url, prefix, ports[0])
        env.update({
            "DATABASE_URL": database_url,
            "TRUSTED_PROXY_COUNT": "1",
            "TRUSTED_HOSTS": HOST,
            "RATE_LIMIT_IP": f"{LIMIT}/minute",
            "BAN_EXEMPT_NETWORKS": "",  # loopback is an ordinary client here
            "GUNICORN_WORKER_CLASS": "gevent",  # as in production: Socket.IO's WebSocket needs it
        })
        create_user(env, *ADMIN, admin=True)  # also creates the tables before two instances race to
        create_user(env, *USER)
        servers: list[Server] = []
        proc: subprocess.Popen[bytes] | None = None
        try:
            for name, port in zip("ab", ports, strict=True):
                (tmp / f"metrics-{name}").mkdir()
                inst_env = {**env, "PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"metrics-{name}")}
                servers.append(start_server(inst_env, tmp / f"gunicorn-{name}.log"))
            conf = tmp / "nginx.conf"
            port = free_port()
            conf.write_text(render(CONF.read_text(), tmp, port, ports))
            _check(nginx, conf)
            with open(tmp / "nginx.out", "wb") as out:
                proc = subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"],
                                        stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 15
            while True:
                assert proc.poll() is None, (tmp / "nginx.out").read_text() + (tmp / "error.log").read_text()
                try:
                    if call(port, "GET", "/healthz").status == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "nginx did not answer within 15 s"
                time.sleep(0.1)
            p = Proxy(port, servers[0], servers[1], ports, tmp / "access.log", "")
            p.admin_token = p.login(*ADMIN, on=p.a, ip="192.0.2.1")
            yield p
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)  # graceful shutdown
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            statuses = [srv.stop() for srv in servers]
            client = redis.Redis.from_url(env["REDIS_URL"])
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
    assert statuses == [0, 0], [srv.log_tail() for srv in servers]
    for srv in servers:
        assert "Traceback" not in srv.log.read_text(errors="replace"), srv.log_tail(8000)


def test_the_shipped_file_is_valid_nginx(tmp_path: Path) -> None:
    """``nginx -t`` on deploy/nginx.conf itself: app1/app2 resolve through an /etc/hosts of a
    private mount namespace (nginx resolves upstream names at load). Where a mount namespace is
    not permitted, the rendered copy checked by the ``proxy`` fixture is the syntax check."""
    nginx = _nginx()
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-m", "true"], capture_output=True, check=False).returncode:
        pytest.skip("no private mount namespace here: only the rendered copy is checked (proxy fixture)")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 app1\n127.0.0.1 app2\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    script = (f"mount --bind {hosts} /etc/hosts && mkdir -p /var/log/nginx && mount --bind {logs} /var/log/nginx"
              f" && exec {nginx} -t -c {CONF}")
    done = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_proxy_headers_are_set_for_every_location() -> None:
    """nginx drops every inherited proxy_set_header in a location that sets one of its own: all
    of them are set at server level, none in a location (so /socket.io/ gets X-Forwarded-For too)."""
    text = CONF.read_text()
    server = text.split("server {", 1)[1]
    head, locations = re.split(r"^\s*location ", server, maxsplit=1, flags=re.M)
    for header in ("Host $http_host", "X-Forwarded-For $remote_addr", "X-Request-ID", "Upgrade $http_upgrade",
                   "Connection $connection_upgrade"):
        assert f"proxy_set_header {header}" in head, header
    assert "proxy_set_header" not in locations
    assert "client_max_body_size 1m;" in text  # = MAX_CONTENT_LENGTH's default (1 MiB)


def test_host_request_id_and_body_limit(proxy: Proxy) -> None:
    src = "127.0.0.2"
    ok = proxy.via("GET", "/actions/system_info", source=src, headers={"X-Request-ID": "nginx-test-42"})
    assert ok.status == 200, ok.body
    assert ok.headers["x-request-id"] == "nginx-test-42" and ok.body["request_id"] == "nginx-test-42"
    made = proxy.via("GET", "/actions/system_info", source=src)
    assert len(made.headers["x-request-id"]) == 32  # nginx's $request_id, the one in both logs
    proxy.logged(f"rid={made.headers['x-request-id']}\n")
    other_host = proxy.via("GET", "/actions/system_info", source=src, headers={"Host": "evil.test"})
    assert other_host.status == 400  # the client's Host reached Keel (TRUSTED_HOSTS)
    too_big = proxy.via("POST", "/auth/login", source=src, raw=b"x" * (1024 * 1024 + 1),
                        headers={"Content-Type": "application/json"})
    assert too_big.status == 413  # refused by nginx, as Keel would


def test_a_spoofed_forwarded_for_changes_nothing(proxy: Proxy) -> None:
    """Keel sees the address nginx saw: a ban of it applies whatever X-Forwarded-For is sent, and
    a ban of the address a client forges does not touch that client."""
    real, other, spoofed = "127.0.0.3", "127.0.0.4", "203.0.113.9"
    for ip in (real, spoofed):
        ban = proxy.direct(proxy.a, "POST", "/actions/ban", ip="192.0.2.1", token=proxy.admin_token,
                           body={"kind": "ip", "identifier": ip, "seconds": 600})
        assert ban.status == 200, ban.body
    for forged in (other, spoofed, "198.51.100.1, 198.51.100.2", "garbage", ""):
        refused = proxy.via("GET", "/actions/system_info", source=real, headers={"X-Forwarded-For": forged})
        assert (refused.status, refused.code) == (403, "banned"), (forged, refused.body)
    # another client forging the banned addresses is served
    for forged in (spoofed, real):
        assert proxy.via("GET", "/actions/system_info", source=other, headers={"X-Forwarded-For": forged}).status == 200
    lift = proxy.direct(proxy.b, "POST", "/actions/lift_ban", ip="192.0.2.1", token=proxy.admin_token,
                        body={"kind": "ip", "identifier": real})
    assert lift.status == 200, lift.body
    freed = proxy.via("GET", "/actions/system_info", source=real, headers={"X-Forwarded-For": spoofed})
    assert freed.status == 200, freed.body


def test_a_token_revoked_on_one_instance_is_refused_by_the_other(proxy: Proxy) -> None:
    src, ip = "127.0.0.5", "192.0.2.5"
    token = proxy.login(*USER, on=proxy.b, ip=ip)
    for _ in range(4):  # warm both instances (and any short cache) with this token
        assert proxy.direct(proxy.b, "GET", "/auth/me", ip=ip, token=token).status == 200
        assert proxy.via("GET", "/auth/me", source=src, token=token).status == 200
    assert proxy.direct(proxy.a, "POST", "/auth/logout", ip=ip, token=token).status == 200
    start = time.monotonic()
    first = proxy.direct(proxy.b, "GET", "/auth/me", ip=ip, token=token)
    through = [proxy.via("GET", "/auth/me", source=src, token=token) for _ in range(4)]  # both upstreams
    assert time.monotonic() - start < 1.0
    assert first.status == 401, first.body
    assert [r.status for r in through] == [401] * 4, [r.body for r in through]


def test_the_ip_limit_is_exact_over_both_instances(proxy: Proxy) -> None:
    """2 x LIMIT requests from one client, spread by nginx over both instances, each with a
    different forged X-Forwarded-For: exactly LIMIT admitted."""
    src = "127.0.0.6"
    before = proxy.access_log.read_text().count("\n")

    def one(i: int) -> tuple[int, str]:
        resp = proxy.via("GET", "/actions/system_info", source=src, headers={"X-Forwarded-For": f"198.51.100.{i}"})
        return resp.status, resp.code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(2 * LIMIT)))
    assert sum(1 for status, _ in results if status == 200) == LIMIT, results
    assert {r for r in results if r[0] != 200} == {(429, "rate_limited")}
    deadline = time.monotonic() + 3
    while True:  # each line is written just after its response
        lines = [line for line in proxy.access_log.read_text().splitlines()[before:] if line.startswith(src + " ")]
        if len(lines) >= 2 * LIMIT or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 2 * LIMIT, lines
    for upstream in proxy.upstreams:  # both instances answered
        assert sum(f"127.0.0.1:{upstream}" in line for line in lines) >= LIMIT // 2 - 2, lines


def test_socketio_works_through_the_proxy(proxy: Proxy) -> None:
    """A python-socketio client (WebSocket transport) through nginx: the upgrade is passed on,
    the token is checked, a room message comes back."""
    import socketio

    token = proxy.login(*USER, on=proxy.a, ip="127.0.0.7")
    received: list[dict[str, Any]] = []
    client = socketio.Client(reconnection=False)
    client.on("room_message", received.append)
    client.connect(f"http://127.0.0.1:{proxy.port}", auth={"token": token}, transports=["websocket"], wait_timeout=10)
    try:
        joined = client.call("join_room", {"room": "via-nginx"}, timeout=10)
        assert joined["ok"] and joined["members"][0]["username"] == USER[0], joined
        assert client.call("room_message", {"room": "via-nginx", "message": "through nginx"}, timeout=10)["ok"]
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m["message"] for m in received] == ["through nginx"]
    finally:
        client.disconnect()
    refused = socketio.Client(reconnection=False)
    try:
        refused.connect(f"http://127.0.0.1:{proxy.port}", auth={"token": "not-a-token"}, transports=["websocket"],
                        wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        pass
    else:
        refused.disconnect()
        raise AssertionError("a bad token was accepted through the proxy")
