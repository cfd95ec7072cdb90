"""PostgreSQL restarted under load: 503 (never 500) during the outage, 100 % success within 5 s
after it, and no broken pooled connection afterwards. The cluster is owned by the test
(``initdb`` + ``pg_ctl`` in a temporary directory on a free port)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import jsonify

from tests.conftest import free_port, unavailable


class PgCluster:
    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.data = root / "data"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    bindir = Path(bindirs[-1]) if bindirs else None
    if bindir is None:
        found = shutil.which("pg_ctl")
        bindir = Path(found).parent if found else None
    if bindir is None or not (bindir / "initdb").exists():
        unavailable("initdb/pg_ctl not installed")
        return
    root = Path(tempfile.mkdtemp(prefix="keel-pg-"))  # under /tmp: reachable by the postgres user
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    cluster = PgCluster(bindir, root, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(root, ignore_errors=True)


def test_restart_mid_load(make_app: Callable[..., Any], pg_cluster: PgCluster) -> None:
    # (a high IP limit: this test is about the database, not the limiter)
    app = make_app(DATABASE_URL=pg_cluster.url, DB_CONNECT_TIMEOUT=1, DB_POOL_TIMEOUT=1, RATE_LIMIT_IP="1000000/minute")
    am = app.extensions["keel"]
    am.state.define("job", {"todo": []}, initial="todo")
    am.state.create("job", "load", {"n": 0})
    counter = iter(range(10**9))

    def write() -> Any:  # a real read + compare-and-set write on every request
        return jsonify(am.state.update("job", "load", {"n": next(counter)}))

    app.add_url_rule("/_write", "write", write, methods=["POST"])
    results: list[tuple[float, float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        client = app.test_client()
        while not stop.is_set():
            started = time.monotonic()
            response = client.post("/_write")
            body = response.get_json() or {}
            code = body.get("error", {}).get("code", "") if response.status_code != 200 else ""
            results.append((started, time.monotonic(), response.status_code, code))
            time.sleep(0.01)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        pg_cluster.stop("fast")
        down_at = time.monotonic()
        time.sleep(1.5)
        up_begin = time.monotonic()
        pg_cluster.start()
        up_at = time.monotonic()
        deadline = up_at + 5
        while time.monotonic() < deadline and not any(s > up_at and st == 200 for s, _, st, _ in results):
            time.sleep(0.05)
        time.sleep(1.5)
    finally:
        stop.set()
        for w in workers:
            w.join(30)

    statuses = {st for _, _, st, _ in results}
    assert statuses <= {200, 503}, sorted(statuses)  # never a 500
    before = [st for s, e, st, _ in results if e < down_at - 0.3]
    assert before and set(before) == {200}
    during = [(st, code) for s, e, st, code in results if s > down_at + 0.05 and e < up_begin]
    assert during and set(during) == {(503, "service_unavailable")}
    waits = sorted(e - s for s, e, st, _ in results if s > down_at + 0.05 and e < up_begin)
    assert waits[len(waits) // 2] < 0.5  # fail fast: no waiting for DB_CONNECT_TIMEOUT (1 s)
    first_ok = min(e for s, e, st, _ in results if s > up_at and st == 200)
    assert first_ok - up_at < 5, f"first success {first_ok - up_at:.2f}s after the restart"
    # Once the database answered (the breaker's probe succeeded), every request succeeds.
    after = [st for s, _, st, _ in results if s >= first_ok]
    assert len(after) > 10 and set(after) == {200}  # no broken pooled connection afterwards
    assert am.db.breaker.state == "closed"
    record = am.state.get("job", "load")
    assert record["version"] == 1 + sum(1 for *_, st, _ in results if st == 200)  # every 200 was a real write
