"""No lost update, full size: 16 processes × 1000 read-modify-write updates of ONE record on
PostgreSQL with the Redis cache on; the final value must be exactly 16,000.

    .venv/bin/python bench/state_lost_update.py [--processes 16] [--updates 1000]

Each process runs its own app (own pools, own in-process cache, invalidated over Redis
pub/sub) and loops: ``get`` (cached, possibly stale) → ``update(n + 1, expected_version)``;
a ``VersionConflict`` is retried after a short random backoff. Prints the final value,
the conflicts and the committed updates per second. Database and Redis as in
``state_throughput.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import summary  # noqa: E402
from bench.state_throughput import make_app, wait_subscribed  # noqa: E402


def worker(db_url: str, redis_url: str, prefix: str, updates: int, start: Any, out: Any) -> None:
    from core.errors import VersionConflict

    app = make_app(db_url, redis_url, prefix, 30.0)
    state = app.extensions["keel"].state
    wait_subscribed(state)
    rng = random.Random()
    conflicts = done = 0
    start.wait()
    while done < updates:
        current = state.get("bench", "counter")
        try:
            state.update("bench", "counter", {"n": current["data"]["n"] + 1}, expected_version=current["version"])
        except VersionConflict:
            conflicts += 1
            time.sleep(rng.uniform(0, 0.004))
            continue
        done += 1
    out.put(conflicts)
    app.extensions["keel"].dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--updates", type=int, default=1000)
    args = parser.parse_args()
    admin_url = sa.make_url(
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    name, prefix = f"keel_bench_{uuid.uuid4().hex[:8]}", f"keelbench:{uuid.uuid4().hex[:8]}:"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        app = make_app(db_url, redis_url, prefix, 30.0)
        app.extensions["keel"].state.create("bench", "counter", {"n": 0})
        ctx = mp.get_context("spawn")
        start, queue = ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=worker, args=(db_url, redis_url, prefix, args.updates, start, queue))
            for _ in range(args.processes)
        ]
        for p in procs:
            p.start()
        time.sleep(3)  # let every process build its app
        began = time.monotonic()
        start.set()
        conflicts = sum(queue.get(timeout=1800) for _ in procs)
        elapsed = time.monotonic() - began
        for p in procs:
            p.join(30)
        app.extensions["keel"].state.cache._local.clear()
        final = app.extensions["keel"].state.get("bench", "counter")
        expected = args.processes * args.updates
        print(f"{args.processes} processes x {args.updates} updates of one record (PostgreSQL + Redis cache)")
        print(f"  final value {final['data']['n']} (expected {expected}), version {final['version']}")
        print(
            f"  {elapsed:.1f}s, {expected / elapsed:,.0f} committed updates/s, {conflicts:,} version conflicts retried"
        )
        summary(
            {
                "measure": f"state: lost updates, {args.processes} processes x {args.updates} updates of one record",
                "redis": "yes",
                "keel": f"{expected - final['data']['n']} lost, {expected / elapsed:,.0f} updates/s",
                "goal": "0 lost",
                "met": "yes" if final["data"]["n"] == expected else "no",
            }
        )
        app.extensions["keel"].dispose()
        if final["data"]["n"] != expected:
            raise SystemExit("LOST UPDATES")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
