"""Exactness of the limiter under real concurrency: the full version of
``tests/limits/test_exactness.py``.

    .venv/bin/python bench/limits_exactness.py [--processes 8] [--requests 1000] [--repeats 20]

8 OS processes (each its own Keel app, like gunicorn workers) call the same public action
``--requests`` times per repeat from one client IP, all released at once, against
``RATE_LIMIT_IP=100/minute`` on Redis; each repeat uses a fresh IP (a fresh key). Prints the
number admitted in each repeat: it must be exactly 100 every time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import summary  # noqa: E402 - after the path setup
from tests.limits.test_exactness import run_workers  # noqa: E402 - after the path setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000, help="per process and repeat")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--limit", default="100/minute")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    prefix = f"keelbench:{uuid.uuid4().hex[:8]}:"
    expected = int(args.limit.split("/")[0])
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="keel-exact-") as tmp:
            results = run_workers(
                Path(tmp),
                {"RATE_LIMIT_IP": args.limit, "REDIS_URL": args.redis, "REDIS_KEY_PREFIX": prefix},
                args.processes,
                args.requests,
                args.repeats,
                timeout=3600,
            )
    finally:
        r = redis.Redis.from_url(args.redis)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)
        r.close()
    elapsed = time.monotonic() - started
    totals = [sum(res["admitted"][i] for res in results) for i in range(args.repeats)]
    calls = args.processes * args.requests * args.repeats
    print(f"{args.processes} processes x {args.requests} requests x {args.repeats} repeats against {args.limit}")
    print(f"admitted per repeat: {totals}")
    print(f"{calls} calls in {elapsed:.1f}s; exact in {sum(t == expected for t in totals)}/{args.repeats} repeats")
    exact = sum(t == expected for t in totals)
    summary(
        {
            "measure": f"rate limit exact across {args.processes} processes ({args.limit})",
            "redis": "yes",
            "keel": f"exact in {exact}/{args.repeats} repeats",
            "goal": "every repeat",
            "met": "yes" if exact == args.repeats else "no",
        }
    )
    if any(t != expected for t in totals):
        sys.exit(1)


if __name__ == "__main__":
    main()
