"""Shared pieces of the benchmarks that serve an app: ports, a throw-away ``redis-server``,
gunicorn servers, the CPU and memory of their workers, Redis commands per request, a load
generator (closed loop and open loop, paced) and the ``SUMMARY`` line the runner collects.

The load generator is plain Python: raw sockets, one new connection per request
(``Connection: close``; gunicorn's sync workers close every connection anyway, so every app and
worker class is called the same way). It shares the machine with the servers, so the numbers
that compare apps are the CPU the *workers* spent per request (``/proc``), not wall time.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


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


def summary(record: dict[str, Any]) -> None:
    """Print the machine-readable line ``python -m bench`` builds its summary table from."""
    print("SUMMARY " + json.dumps(record, sort_keys=True), flush=True)


# --- processes ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(c) for c in path.read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes so far: the sum over their threads of ``schedstat``'s time on
    a CPU (nanoseconds; ``/proc/<pid>/stat``'s user + system ticks, 10 ms each, when absent).
    A thread that ended in between takes its time with it: the servers' threads live as long
    as their worker."""
    total = 0.0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                try:
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
                except OSError:
                    continue
    return total


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RedisServer:
    """A throw-away ``redis-server`` (no persistence) on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(["redis-server", *options, "--dir", str(workdir)], stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def cpu_seconds(self) -> float:
        return cpu_seconds([self.proc.pid])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Gunicorn:
    """``gunicorn -c deploy/gunicorn.conf.py <target>`` (the production configuration) with
    ``workers`` workers of ``worker_class`` (``sync`` or ``gevent``), or with ``conf=False``
    plain ``gunicorn -k <worker_class>`` and no configuration file."""

    name: str
    target: str
    env: dict[str, str]
    worker_class: str = "sync"
    workers: int = 2
    cwd: Path = ROOT
    conf: bool = True
    log: Path | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        env = {**os.environ, **self.env}
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            GUNICORN_WORKERS=str(self.workers),
            GUNICORN_WORKER_CLASS=self.worker_class,
        )
        env.setdefault("LOG_LEVEL", "WARNING")
        if self.conf:
            command = [GUNICORN, "-c", str(GUNICORN_CONF), "--chdir", str(self.cwd), self.target]
        else:
            command = [GUNICORN, "-w", str(self.workers), "-k", self.worker_class]
            command += ["-b", f"127.0.0.1:{self.port}", "--chdir", str(self.cwd), "--log-level", "warning", self.target]
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL  # the child keeps it
        self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float = 60) -> None:
        """Until the port answers and every worker has booted."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                if len(self.worker_pids()) == self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""
        self.stop()
        raise RuntimeError(f"gunicorn {self.name} did not start:\n{tail}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return children(self.proc.pid)

    def cpu_seconds(self) -> float:
        """CPU of the workers (the master only watches them)."""
        return cpu_seconds(self.worker_pids())

    def rss(self) -> list[int]:
        return [rss_bytes(pid) for pid in self.worker_pids()]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- Redis commands -----------------------------------------------------------------------


def redis_commands(redis_url: str, drive: Callable[[], object]) -> Counter[str]:
    """Commands clients sent to Redis while ``drive()`` ran (``MONITOR``; commands run inside
    scripts and connection set-up excluded)."""
    import redis

    seen: Counter[str] = Counter()
    ready = threading.Event()
    stop = f"bench-stop-{uuid.uuid4().hex}"
    r = redis.Redis.from_url(redis_url)

    def watch() -> None:
        with r.monitor() as m:
            ready.set()
            for cmd in m.listen():
                if stop in cmd["command"]:
                    return
                name = cmd["command"].split()[0].upper()
                if cmd.get("client_type") != "lua" and name not in {"HELLO", "CLIENT", "SELECT", "AUTH"}:
                    seen[name] += 1

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    ready.wait(5)
    try:
        drive()
    finally:
        r.echo(stop)
        t.join(10)
        r.close()
    return seen


# --- load -------------------------------------------------------------------------------------


def http_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request that asks the server to close the connection."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def call(port: int, payload: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Send ``payload`` on a new connection; (status, whole response) once the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    return (int(data[9:12]) if data[:5] == b"HTTP/" else 0), data


@dataclass
class Load:
    statuses: Counter[int]
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)  # paced runs: from the scheduled start
    late_s: float = 0.0  # paced runs: how late the client started its most delayed request

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies_s)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _run_threads(count: int, target: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def closed_loop(port: int, payload: bytes, requests: int, concurrency: int = 4, seconds: float | None = None) -> Load:
    """``requests`` calls (or as many as fit in ``seconds``) from ``concurrency`` threads, each
    sending its next as soon as the previous one is answered: the server's capacity, as far as
    this client can drive it. Latencies are kept too."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    counter = itertools.count()
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")

    def loop() -> None:
        local: Counter[int] = Counter()
        mine: list[float] = []
        while next(counter) < requests and (t := time.perf_counter()) < deadline:
            local[call(port, payload)[0]] += 1
            mine.append(time.perf_counter() - t)
        with lock:
            statuses.update(local)
            latencies.extend(mine)

    t0 = time.perf_counter()
    _run_threads(concurrency, loop)
    return Load(statuses, time.perf_counter() - t0, latencies)


def paced(port: int, payload: bytes, rate: float, requests: int, threads: int = 16) -> Load:
    """Open loop: request ``i`` is due at ``start + i / rate`` whatever the server does (a
    slow answer does not delay the next request); latency counts from the due time, so time
    spent queued behind a slow request is included (no coordinated omission)."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    late = [0.0]
    lock = threading.Lock()
    counter = itertools.count()
    start = time.perf_counter() + 0.05

    def loop() -> None:
        local: Counter[int] = Counter()
        mine: list[float] = []
        worst = 0.0
        while (i := next(counter)) < requests:
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                worst = max(worst, -wait)
            local[call(port, payload)[0]] += 1
            mine.append(time.perf_counter() - due)
        with lock:
            statuses.update(local)
            latencies.extend(mine)
            late[0] = max(late[0], worst)

    _run_threads(threads, loop)
    return Load(statuses, time.perf_counter() - start, latencies, late[0])
