"""CPU per request of Keel's full pipeline vs a bare Flask route vs the usual Flask stack.

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/limits_pipeline.py [--requests 3000] [--rounds 3] [--concurrency 4]

Starts its own ``redis-server`` and three gunicorn servers (2 sync workers each), all in one
run, and calls each the same way (POST a small JSON body, new connection per request):

- ``bare``: a bare Flask route (no auth, no limits, no validation);
- ``keel``: the action ``bench_task`` — JWT + deny-list + ban + IP/user/action limits +
  parameter validation (one EVALSHA per request);
- ``peer``: flask-jwt-extended (Redis deny-list) + Flask-Limiter on Redis (moving window, IP +
  user + per-route limits) + pydantic.

Reported per app: requests/s, CPU µs per request of the gunicorn workers and of Redis
(``/proc`` and ``INFO cpu``), Redis commands per request sent by clients (``MONITOR``, commands
run inside scripts excluded), and the CPU efficiency ratios ``bare/keel`` (goal ≥ 0.60) and
``peer/keel`` (goal ≥ 1.6).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACTIONS = """\
version: 1
module: benchecho
actions:
  bench_task:
    handler: echo
    methods: [POST]
    auth: user
    rate_limit: "100000/minute"
    params:
      title: {type: string, required: true, minLength: 1, maxLength: 200}
      priority: {type: integer, minimum: 1, maximum: 5, default: 3}
"""
BODY = json.dumps({"title": "Write the benchmark", "priority": 2}).encode()
JWT_SECRET = "bench-" + "s" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Server:
    def __init__(self, name: str, path: str, headers: dict[str, str], env: dict[str, str]) -> None:
        self.name, self.path, self.headers = name, path, {"Content-Type": "application/json", **headers}
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-w",
                "2",
                "-k",
                "sync",
                "-b",
                f"127.0.0.1:{self.port}",
                "--chdir",
                str(ROOT),
                "--log-level",
                "warning",
                "bench.limits_apps:app",
            ],
            env={**os.environ, **env, "BENCH_APP": name},
        )
        wait_port(self.port)

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()

    def cpu(self) -> float:
        total = 0.0
        for p in [psutil.Process(self.proc.pid), *self.workers()]:
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def call(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", self.path, body=BODY, headers=self.headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def drive(server: Server, n: int, concurrency: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    per_thread = n // concurrency

    def loop() -> None:
        local: Counter[int] = Counter()
        for _ in range(per_thread):
            local[server.call()] += 1
        with lock:
            statuses.update(local)

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def commands_per_request(r_url: str, server: Server, n: int) -> float:
    """Commands clients sent to Redis during ``n`` calls (MONITOR; script internals excluded)."""
    seen: Counter[str] = Counter()
    ready = threading.Event()
    stop = f"bench-stop-{uuid.uuid4().hex}"
    r = redis.Redis.from_url(r_url)

    def watch() -> None:
        with r.monitor() as m:
            ready.set()
            for cmd in m.listen():
                if stop in cmd["command"]:
                    return
                name = cmd["command"].split()[0].upper()
                if cmd.get("client_type") != "lua" and name not in {"HELLO", "CLIENT", "SELECT", "AUTH"}:
                    seen[name] += 1

    t = threading.Thread(target=watch)
    t.start()
    ready.wait(5)
    for _ in range(n):
        server.call()
    r.echo(stop)
    t.join(10)
    r.close()
    print(f"  {server.name}: Redis commands in {n} requests: {dict(seen)}")
    return sum(seen.values()) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000, help="per app and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="keel-limits-bench-"))
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_port(redis_port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    (tmp / "actions").mkdir()
    (tmp / "actions" / "bench.yaml").write_text(ACTIONS)
    (tmp / "secrets").mkdir()
    keel_env = {
        "APP_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": f"sqlite:///{tmp / 'keel.db'}",
        "SECRETS_DIR": str(tmp / "secrets"),
        "ACTIONS_DIR": str(tmp / "actions"),
        "ACTIONS_RELOAD_INTERVAL": "0",
        "MODULES_DIR": str(ROOT / "bench" / "bench_modules"),
        "REDIS_URL": redis_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "RATE_LIMIT_IP": "100000/minute",
        "RATE_LIMIT_USER": "100000/minute",
    }
    peer_env = {"PEER_REDIS_URL": redis_url, "PEER_JWT_SECRET": JWT_SECRET}

    # tokens: a Keel user (in the shared SQLite database) and a flask-jwt-extended one
    from core import create_app

    keel = create_app(keel_env, env={})
    am = keel.extensions["keel"]
    user = am.jwt.users.create("bench", "bench password 123", roles=("user",))
    keel_token = am.jwt.issue_pair(user)["access_token"]
    am.dispose()
    os.environ.update(peer_env)
    os.environ["BENCH_APP"] = "peer"
    from flask_jwt_extended import create_access_token

    from bench import limits_apps

    with limits_apps.app.app_context():
        peer_token = create_access_token(identity="1")

    servers = [
        Server("bare", "/bare", {}, {}),
        Server("keel", "/actions/bench_task", {"Authorization": f"Bearer {keel_token}"}, keel_env),
        Server("peer", "/task", {"Authorization": f"Bearer {peer_token}"}, peer_env),
    ]
    r = redis.Redis.from_url(redis_url)
    try:
        for s in servers:  # warm up every worker; check the answers
            got = drive(s, 400, args.concurrency)
            assert set(got) == {200}, (s.name, got)
        cmds = {s.name: commands_per_request(redis_url, s, 100) for s in servers}
        cpu = dict.fromkeys(cmds, 0.0)
        rcpu = dict.fromkeys(cmds, 0.0)
        wall = dict.fromkeys(cmds, 0.0)
        done = dict.fromkeys(cmds, 0)
        for _ in range(args.rounds):
            for s in servers:
                c0, r0, t0 = s.cpu(), redis_cpu(r), time.perf_counter()
                got = drive(s, args.requests, args.concurrency)
                wall[s.name] += time.perf_counter() - t0
                cpu[s.name] += s.cpu() - c0
                rcpu[s.name] += redis_cpu(r) - r0
                done[s.name] += sum(got.values())
                assert set(got) == {200}, (s.name, got)
    finally:
        for s in servers:
            s.stop()
        r.close()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    def per_req(name: str, with_redis: bool) -> float:
        return (cpu[name] + (rcpu[name] if with_redis else 0.0)) / done[name] * 1e6

    print(
        f"\n{args.rounds} rounds x {args.requests} requests per app, gunicorn 2 sync workers, "
        f"{args.concurrency} client threads, new connection per request\n"
    )
    header = ("app", "req/s", "worker µs/req", "redis µs/req", "total µs/req", "redis cmds/req")
    print("{:<6} {:>8} {:>14} {:>13} {:>13} {:>15}".format(*header))
    for name in cpu:
        print(
            f"{name:<6} {done[name] / wall[name]:>8.0f} {per_req(name, False):>14.0f} "
            f"{rcpu[name] / done[name] * 1e6:>13.0f} {per_req(name, True):>13.0f} {cmds[name]:>15.2f}"
        )
    print()
    for with_redis in (False, True):
        label = "workers + Redis" if with_redis else "workers only"
        keel_cpu = per_req("keel", with_redis)
        vs_bare = per_req("bare", with_redis) / keel_cpu
        vs_peer = per_req("peer", with_redis) / keel_cpu
        print(
            f"CPU efficiency ({label}): keel = {vs_bare:.2f}x bare Flask (goal >= 0.60), "
            f"{vs_peer:.2f}x the flask-jwt-extended + Flask-Limiter + pydantic peer (goal >= 1.6)"
        )


if __name__ == "__main__":
    main()
