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
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Gunicorn, RedisServer, closed_loop, http_request, redis_commands, summary

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


class Server(Gunicorn):
    """One app of ``bench/limits_apps.py`` under ``gunicorn -k sync -w 2``, and its request."""

    def __init__(self, name: str, path: str, headers: dict[str, str], env: dict[str, str]) -> None:
        super().__init__(name, "bench.limits_apps:app", {**env, "BENCH_APP": name}, "sync", 2, conf=False)
        self.payload = http_request("POST", path, {"Content-Type": "application/json", **headers}, BODY)
        self.start()

    def drive(self, n: int, concurrency: int) -> dict[int, int]:
        return dict(closed_loop(self.port, self.payload, n, concurrency).statuses)


def commands_per_request(r_url: str, server: Server, n: int) -> float:
    """Commands clients sent to Redis during ``n`` calls (MONITOR; commands run inside scripts excluded)."""
    seen = redis_commands(r_url, lambda: server.drive(n, 1))
    print(f"  {server.name}: Redis commands in {n} requests: {dict(seen)}")
    return sum(seen.values()) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000, help="per app and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="keel-limits-bench-"))
    redis_server = RedisServer(tmp)
    redis_url = redis_server.url
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
    try:
        for s in servers:
            s.wait()
        for s in servers:  # warm up every worker; check the answers
            got = s.drive(400, args.concurrency)
            assert set(got) == {200}, (s.name, got)
        cmds = {s.name: commands_per_request(redis_url, s, 100) for s in servers}
        cpu = dict.fromkeys(cmds, 0.0)
        rcpu = dict.fromkeys(cmds, 0.0)
        wall = dict.fromkeys(cmds, 0.0)
        done = dict.fromkeys(cmds, 0)
        rounds: dict[str, list[float]] = {name: [] for name in cmds}  # worker µs/request per round
        for _ in range(args.rounds):
            for s in servers:
                c0, r0, t0 = s.cpu_seconds(), redis_server.cpu_seconds(), time.perf_counter()
                got = s.drive(args.requests, args.concurrency)
                wall[s.name] += time.perf_counter() - t0
                cpu[s.name] += s.cpu_seconds() - c0
                rcpu[s.name] += redis_server.cpu_seconds() - r0
                done[s.name] += sum(got.values())
                rounds[s.name].append((s.cpu_seconds() - c0) / sum(got.values()) * 1e6)
                assert set(got) == {200}, (s.name, got)
    finally:
        for s in servers:
            s.stop()
        redis_server.stop()
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
    vs_bare_r = [b / k for b, k in zip(rounds["bare"], rounds["keel"], strict=True)]
    vs_peer_r = [p / k for p, k in zip(rounds["peer"], rounds["keel"], strict=True)]
    summary(
        {
            "measure": "CPU per request: other / Keel (bench_task: 3 limits, 2 params)",
            "shape": "POST user",
            "worker": "sync",
            "redis": "yes",
            "keel": f"{per_req('keel', False):.0f} µs",
            "vs_bare": [min(vs_bare_r), max(vs_bare_r)],
            "vs_equivalent": [min(vs_peer_r), max(vs_peer_r)],
            "redis_cmds": round(cmds["keel"], 2),
        }
    )


if __name__ == "__main__":
    main()
