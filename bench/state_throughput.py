"""StateManager throughput on PostgreSQL + Redis: cached ``get`` and ``transition``,
in one process and in two processes (as two gunicorn workers would be).

    .venv/bin/python bench/state_throughput.py [--seconds 3] [--records 200] [--threads 4]

Uses ``BENCH_DATABASE_URL`` (default ``TEST_DATABASE_URL`` or the local PostgreSQL) to create
a throw-away database, and ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/9``) with a
unique key prefix; both are removed afterwards.

- ``get (cached)``: every thread reads random records that are already cached (in-process
  cache, invalidated over Redis pub/sub); ``get (redis only)`` disables the in-process cache.
- ``transition``: every thread flips its own records todo -> doing -> todo (a read plus a
  compare-and-set UPDATE plus a history INSERT per call, then the Redis write-through and the
  pub/sub invalidation).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRAPH = {"todo": ["doing"], "doing": ["todo", "done"], "done": []}


def make_app(db_url: str, redis_url: str, prefix: str, local_ttl: float) -> Any:
    from core import create_app

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    (tmp / "actions").mkdir()
    app = create_app(
        {
            "APP_ENV": "test",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "SECRETS_DIR": str(tmp),
            "ACTIONS_DIR": str(tmp / "actions"),
            "ACTIONS_RELOAD_INTERVAL": 0,
            "STATE_LOCAL_CACHE_TTL": local_ttl,
            "DB_POOL_SIZE": 10,
        },
        env={},
    )
    app.extensions["keel"].state.define("bench", GRAPH, initial="todo")
    return app


def wait_subscribed(state: Any) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sub = state.cache.subscription
        if sub is None or sub.connected:
            return
        time.sleep(0.01)


def run(
    kind: str,
    db_url: str,
    redis_url: str,
    prefix: str,
    records: int,
    threads: int,
    seconds: float,
    worker: int,
    local_ttl: float,
    out: Any,
    ready: Any = None,
    go: Any = None,
) -> None:
    app = make_app(db_url, redis_url, prefix, local_ttl)
    state = app.extensions["keel"].state
    wait_subscribed(state)
    keys = [f"r{i}" for i in range(records)]
    for key in keys:  # warm the caches
        state.get("bench", key)
    counts = [0] * threads
    if ready is not None and go is not None:  # every process starts measuring at the same time
        ready.put(worker)
        go.wait()
    stop = time.monotonic() + seconds

    def loop(t: int) -> None:
        rng = random.Random(t)
        if kind == "get":
            while time.monotonic() < stop:
                state.get("bench", keys[rng.randrange(records)])
                counts[t] += 1
        else:
            mine = [k for i, k in enumerate(keys) if i % (threads * 2) == worker * threads + t]
            n = 0
            while time.monotonic() < stop:
                key = mine[n % len(mine)]
                current = state.get("bench", key)
                state.transition("bench", key, "doing" if current["state"] == "todo" else "todo")
                counts[t] += 1
                n += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(sum(counts))
    app.extensions["keel"].dispose()


def measure(kind: str, processes: int, args: Any, db_url: str, redis_url: str, prefix: str, local_ttl: float) -> float:
    ctx = mp.get_context("spawn")
    queue, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(
            target=run,
            args=(kind, db_url, redis_url, prefix, args.records, args.threads, args.seconds, w, local_ttl, queue),
            kwargs={"ready": ready, "go": go},
        )
        for w in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    go.set()
    total = sum(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    return total / args.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
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
        state = app.extensions["keel"].state
        for i in range(args.records):
            state.create("bench", f"r{i}")
        app.extensions["keel"].dispose()
        print(f"PostgreSQL + Redis, {args.records} records, {args.threads} threads/process, {args.seconds:g}s each")
        for label, kind, local_ttl in (
            ("get (cached)", "get", 30.0),
            ("get (redis only)", "get", 0.0),
            ("transition", "transition", 30.0),
        ):
            for processes in (1, 2):
                rate = measure(kind, processes, args, db_url, redis_url, prefix, local_ttl)
                print(f"  {label:<18} {processes} process{'es' if processes > 1 else '  '}  {rate:>9,.0f} ops/s")
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
