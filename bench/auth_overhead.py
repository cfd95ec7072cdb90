"""CPU per request of an authenticated action (JWT + deny-list) vs the same action public.

    .venv/bin/python bench/auth_overhead.py [--requests 2000] [--redis redis://127.0.0.1:6379/9]

Two YAML actions share one handler (``system.info``): ``bench_public`` (auth: public) and
``bench_user`` (auth: user). Each is called N times through the Flask test client (no
network: the number is Keel's own work). Reported: CPU µs per request (``time.process_time``),
the ratio, and Redis round trips per request (counted at the socket: every command or pipeline
sent), which shows that the deny-list check rides the limiter's single round trip.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import summary  # noqa: E402 - after the path set-up

ACTIONS = """\
version: 1
actions:
  bench_public: {handler: system.info, methods: [GET], auth: public}
  bench_user: {handler: system.info, methods: [GET], auth: user}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--no-redis", action="store_true", help="in-process limiter, deny-list in the database")
    args = parser.parse_args()

    import redis.connection

    from core import create_app

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    (tmp / "actions").mkdir()
    (tmp / "actions" / "bench.yaml").write_text(ACTIONS)
    prefix = f"keelbench:{uuid.uuid4().hex[:8]}:"
    config: dict[str, Any] = {
        "APP_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": f"sqlite:///{tmp / 'keel.db'}",
        "SECRETS_DIR": str(tmp),
        "ACTIONS_DIR": str(tmp / "actions"),
        "ACTIONS_RELOAD_INTERVAL": 0,
        "MODULES_DIR": str(ROOT / "modules"),
        "RATE_LIMIT_IP": "1000000/minute",
        "RATE_LIMIT_USER": "1000000/minute",
    }
    if not args.no_redis:
        config.update(REDIS_URL=args.redis, REDIS_KEY_PREFIX=prefix)
    app = create_app(config, env={})
    am = app.extensions["keel"]
    am.jwt.users.create("bench", "bench-password-123")
    client = app.test_client()
    token = client.post("/auth/login", json={"username": "bench", "password": "bench-password-123"}).get_json()[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}"}

    sends = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends[0] += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]

    def run(path: str, hdrs: dict[str, str]) -> tuple[float, float, float]:
        for _ in range(50):  # warm up (caches, resync, script load)
            assert client.get(path, headers=hdrs).status_code == 200
        sends[0] = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(args.requests):
            resp = client.get(path, headers=hdrs)
            assert resp.status_code == 200, resp.get_json()
        cpu = (time.process_time() - cpu0) / args.requests * 1e6
        wall = (time.perf_counter() - wall0) / args.requests * 1e6
        return cpu, wall, sends[0] / args.requests

    # Interleave two rounds to even out noise from a shared CPU.
    results: dict[str, list[tuple[float, float, float]]] = {"public": [], "user": []}
    for _ in range(2):
        results["public"].append(run("/actions/bench_public", {}))
        results["user"].append(run("/actions/bench_user", headers))
    pub = min(results["public"])
    usr = min(results["user"])
    backend = "in-process (no Redis)" if args.no_redis else f"Redis {args.redis}"
    print(f"backend: {backend}; {args.requests} requests per round, best of 2 rounds")
    print(f"public action:        {pub[0]:8.1f} µs CPU/request  {pub[1]:8.1f} µs wall  {pub[2]:.2f} Redis round trips")
    print(f"authenticated action: {usr[0]:8.1f} µs CPU/request  {usr[1]:8.1f} µs wall  {usr[2]:.2f} Redis round trips")
    print(f"CPU ratio authenticated/public: {usr[0] / pub[0]:.2f}")
    summary(
        {
            "measure": "in process: CPU of a user-token action / the same action public (best of 2)",
            "redis": "no" if args.no_redis else "yes",
            "keel": f"{usr[0]:.0f} µs vs {pub[0]:.0f} µs",
            "redis_cmds": round(usr[2], 2),
        }
    )
    if not args.no_redis:
        client_r = redis.Redis.from_url(args.redis)
        keys = list(client_r.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client_r.delete(*keys)
    am.dispose()


if __name__ == "__main__":
    main()
