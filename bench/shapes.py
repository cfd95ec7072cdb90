"""Keel's request pipeline against bare Flask and two peer stacks, in several request shapes.

    .venv/bin/python bench/shapes.py [--requests 500] [--rounds 3] [--quick]

Four gunicorn servers per configuration, each with 2 workers, all started from
``deploy/gunicorn.conf.py`` (the production configuration; ``GUNICORN_WORKER_CLASS`` = ``sync``
or ``gevent``, ``GUNICORN_WORKERS=2``), the apps of ``bench/limits_apps.py``:

- ``bare``: bare Flask routes echoing their parameters;
- ``keel``: ``create_app()`` with the shipped modules plus an echo module, ``APP_ENV=production``,
  SQLite, ``LOG_LEVEL=INFO`` (the default: its access log on); actions
  ``shape_<get|post>_<public|user|key>`` (IP and user limits, plus a per-action limit on the
  authenticated ones: the equivalent peer's three);
- ``minimal``: flask-jwt-extended + Flask-Limiter (one limit) + pydantic;
- ``peer`` (equivalent): flask-jwt-extended with a Redis deny-list + Flask-Limiter on Redis
  (moving window, three limits) + pydantic; only in the configurations with Redis.

Configurations: {with Redis (``REDIS_URL``; Flask-Limiter on the same Redis), without Redis
(Keel: the in-process limiter and the database's deny-list; minimal peer: ``memory://``)} x
{sync, gevent}. Request shapes: ``GET /actions/<name>?n=42&verbose=true`` and ``POST`` with a
JSON body; auth public, user (a JWT) and API key (``X-API-Key``: Keel only, the peers have no
API keys). Every request opens a new connection (``Connection: close``), for every app.

Measured per configuration, after a warm-up of every worker:

- **CPU per request** of the gunicorn workers (``/proc``: user + system, before/after), and
  requests/s, closed loop (4 client threads), the apps interleaved in rounds (A B C D A B C D
  ...) so that machine noise hits all alike; ratios ``other CPU / Keel CPU`` per round, reported
  as the min–max over rounds. Goals: bare ≥ 0.65, minimal peer ≥ 2.0, equivalent peer ≥ 3.0;
- **Redis commands** per Keel request (``MONITOR``, script internals excluded): 1 EVALSHA with
  Redis, 0 without;
- **latency** p50/p99, open loop (requests due at fixed intervals whatever the server does,
  latency from the due time), at 50 % of each app's own measured capacity, bare and Keel
  interleaved, shape GET user; goal Keel p99 ≤ 2 x bare p99;
- **RSS per worker** after the runs (goal for Keel ≤ 70 MiB with Redis, database and JWT on);
- **start-up**: ``import core`` and ``create_app()`` with the shipped modules and Redis, in
  fresh processes (median).

The client is Python in the same machine: requests/s and latencies include its share of the
CPU, the CPU per request of the workers does not. ``--quick`` measures one shape (GET user,
Redis) under sync and gevent only, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PYTHON, ROOT, Gunicorn, Load, RedisServer, call, closed_loop, http_request, paced, redis_commands
from harness import summary as emit

sys.path.insert(0, str(ROOT))

JWT_SECRET = "bench-" + "s" * 40
QUERY = "n=42&verbose=true"
BODY = json.dumps({"title": "Write the benchmark", "priority": 2}).encode()
GET_PARAMS = "{n: {type: integer, minimum: 0, maximum: 1000, required: true}, verbose: {type: boolean, default: false}}"
POST_PARAMS = (
    "{title: {type: string, required: true, minLength: 1, maxLength: 200}, "
    "priority: {type: integer, minimum: 1, maximum: 5, default: 3}}"
)
AUTHS = {"public": "public", "user": "user", "key": "api_key"}
GOALS = {"bare": 0.65, "minimal": 2.0, "peer": 3.0}
APPS = ("bare", "keel", "minimal", "peer")
LIMIT = "100000000/minute"


def actions_yaml() -> str:
    lines = ["version: 1", "module: benchecho", "actions:"]
    for method, params in (("get", GET_PARAMS), ("post", POST_PARAMS)):
        for short, auth in AUTHS.items():
            limit = "" if auth == "public" else f", rate_limit: '{LIMIT}'"  # as the equivalent peer's third limit
            lines.append(
                f"  shape_{method}_{short}: {{handler: params, methods: [{method.upper()}], auth: {auth}{limit}, "
                f"params: {params}}}"
            )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Config:
    redis: bool
    worker: str

    @property
    def label(self) -> str:
        return f"{self.worker}, {'Redis' if self.redis else 'no Redis'}"


@dataclass(frozen=True)
class Shape:
    method: str
    auth: str

    @property
    def label(self) -> str:
        return f"{self.method} {self.auth}"

    def apps(self, config: Config) -> list[str]:
        apps = ["bare", "keel"]
        if self.auth != "key":  # the peers have no API keys
            apps.append("minimal")
            if config.redis:  # the equivalent peer's deny-list and limits are in Redis
                apps.append("peer")
        return apps


@dataclass
class Project:
    tmp: Path
    redis: RedisServer
    keel_env: dict[str, str]
    keel_token: str
    api_key: str
    peer_token: str


@dataclass
class Result:
    cpu_us: dict[str, list[float]] = field(default_factory=dict)  # app -> per round
    rps: dict[str, list[float]] = field(default_factory=dict)
    redis_us: dict[str, list[float]] = field(default_factory=dict)
    commands: dict[str, int] | None = None
    command_calls: int = 0


def project(tmp: Path) -> Project:
    """Redis, the Keel project (shipped modules + the echo module), a user, a token, a key."""
    redis_server = RedisServer(tmp)
    (tmp / "mods").mkdir()
    for module in sorted((ROOT / "modules").iterdir()):
        if module.is_dir() and (module / "__init__.py").exists():
            (tmp / "mods" / module.name).symlink_to(module)
    (tmp / "mods" / "benchecho").symlink_to(ROOT / "bench" / "bench_modules" / "benchecho")
    (tmp / "acts").mkdir()
    for yaml in (ROOT / "actions").glob("*.yaml"):
        shutil.copy(yaml, tmp / "acts" / yaml.name)
    (tmp / "acts" / "shapes.yaml").write_text(actions_yaml())
    (tmp / "secrets").mkdir()
    keel_env = {
        "APP_ENV": "production",
        "TRUSTED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "INFO",  # the default: one access-log line per request, as shipped
        "DATABASE_URL": f"sqlite:///{tmp / 'keel.db'}",
        "SECRETS_DIR": str(tmp / "secrets"),
        "ACTIONS_DIR": str(tmp / "acts"),
        "ACTIONS_RELOAD_INTERVAL": "0",
        "MODULES_DIR": str(tmp / "mods"),
        "JWT_SECRET_KEY": JWT_SECRET,
        "API_KEY_PEPPER": "bench-pepper-" + "p" * 40,
        "RATE_LIMIT_IP": LIMIT,
        "RATE_LIMIT_USER": LIMIT,
    }
    from core import create_app

    app = create_app({**keel_env, "REDIS_URL": redis_server.url}, env={})
    am = app.extensions["keel"]
    user = am.jwt.users.create("bench", "bench password 123", roles=("user",))
    keel_token = am.jwt.issue_pair(user)["access_token"]
    api_key = am.api_keys.create("bench", [], owner_id=user.id)["key"]
    am.dispose()

    os.environ.update(BENCH_APP="minimal", PEER_JWT_SECRET=JWT_SECRET)
    from flask_jwt_extended import create_access_token

    from bench import limits_apps

    with limits_apps.app.app_context():
        peer_token = create_access_token(identity="1")
    return Project(tmp, redis_server, keel_env, keel_token, api_key, peer_token)


def request_for(app: str, shape: Shape, p: Project) -> bytes:
    headers: dict[str, str] = {}
    if app == "keel":
        path = f"/actions/shape_{shape.method.lower()}_{shape.auth}"
        if shape.auth == "user":
            headers["Authorization"] = f"Bearer {p.keel_token}"
        elif shape.auth == "key":
            headers["X-API-Key"] = p.api_key
    elif app == "bare":
        path = "/bare"
    else:
        path = "/task" if shape.auth == "user" else "/pub/task"
        if shape.auth == "user":
            headers["Authorization"] = f"Bearer {p.peer_token}"
    if shape.method == "GET":
        return http_request("GET", f"{path}?{QUERY}", headers)
    return http_request("POST", path, {**headers, "Content-Type": "application/json"}, BODY)


def check(app: str, shape: Shape, port: int, payload: bytes) -> None:
    """The app answers the shape as meant: 200 and the parameters echoed, converted."""
    status, data = call(port, payload)
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    try:
        result = json.loads(body).get("result", {})
    except ValueError:
        result = {}
    expected = {"n": 42, "verbose": True} if shape.method == "GET" else {"title": "Write the benchmark", "priority": 2}
    if status != 200 or any(result.get(k) != v for k, v in expected.items()):
        raise SystemExit(f"{app} {shape.label}: unexpected answer {status}: {body[:500]!r}")


def start_servers(config: Config, p: Project) -> dict[str, Gunicorn]:
    servers: dict[str, Gunicorn] = {}
    for app in APPS:
        if app == "peer" and not config.redis:
            continue
        env = {"BENCH_APP": app, "PROMETHEUS_MULTIPROC_DIR": str(p.tmp / f"metrics-{app}-{config.worker}")}
        if app == "keel":
            env.update(p.keel_env)
            if config.redis:
                env["REDIS_URL"] = p.redis.url
        elif app != "bare":
            env["PEER_JWT_SECRET"] = JWT_SECRET
            if config.redis:
                env["PEER_REDIS_URL"] = p.redis.url
        log = p.tmp / f"gunicorn-{app}-{config.worker}-{'redis' if config.redis else 'noredis'}.log"
        servers[app] = Gunicorn(app, "bench.limits_apps:app", env, config.worker, log=log).start()
    for server in servers.values():
        server.wait()
    return servers


def measure_config(config: Config, shapes: list[Shape], p: Project, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    servers = start_servers(config, p)
    print(f"\n({config.label}: servers started in {time.monotonic() - t0:.0f} s)", flush=True)
    out: dict[str, Any] = {"results": {}, "latency": {}, "rss": {}}
    try:
        payloads = {(s, a): request_for(a, s, p) for s in shapes for a in s.apps(config)}
        for (shape, app), payload in payloads.items():  # warm up every worker, check the answers
            check(app, shape, servers[app].port, payload)
            warm = closed_loop(servers[app].port, payload, args.warmup)
            if set(warm.statuses) != {200}:
                raise SystemExit(f"{app} {shape.label} ({config.label}): {dict(warm.statuses)}")
        results = {s: Result() for s in shapes}
        for shape in shapes:  # Keel's Redis commands per request
            port, payload = servers["keel"].port, payloads[(shape, "keel")]
            seen = redis_commands(
                p.redis.url, lambda port=port, payload=payload: closed_loop(port, payload, args.command_calls, 1)
            )
            results[shape].commands, results[shape].command_calls = dict(seen), args.command_calls
        for _ in range(args.rounds):
            for shape in shapes:
                for app in shape.apps(config):
                    server, res = servers[app], results[shape]
                    c0, r0 = server.cpu_seconds(), p.redis.cpu_seconds()
                    load = closed_loop(server.port, payloads[(shape, app)], args.requests, args.concurrency)
                    cpu, rcpu = server.cpu_seconds() - c0, p.redis.cpu_seconds() - r0
                    if set(load.statuses) != {200}:
                        raise SystemExit(f"{app} {shape.label} ({config.label}): {dict(load.statuses)}")
                    res.cpu_us.setdefault(app, []).append(cpu / load.requests * 1e6)
                    res.rps.setdefault(app, []).append(load.rps)
                    res.redis_us.setdefault(app, []).append(rcpu / load.requests * 1e6)
        out["results"] = results
        lat_shape = Shape("GET", "user")
        if lat_shape in results:
            runs: dict[str, list[Load]] = {"bare": [], "keel": []}
            for _ in range(args.latency_rounds):
                for app in runs:
                    rate = statistics.median(results[lat_shape].rps[app]) / 2
                    n = max(50, int(rate * args.latency_seconds))
                    runs[app].append(paced(servers[app].port, payloads[(lat_shape, app)], rate, n))
            out["latency"] = runs
        out["rss"] = {app: s.rss() for app, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    return out


def startup(p: Project, starts: int) -> dict[str, float]:
    """``import core`` and ``create_app()`` with the shipped modules and Redis, fresh processes."""
    code = (
        "import json, time\nt0 = time.perf_counter()\nfrom core import create_app\nt1 = time.perf_counter()\n"
        "app = create_app()\nt2 = time.perf_counter()\napp.extensions['keel'].dispose()\n"
        "print(json.dumps({'import': t1 - t0, 'create_app': t2 - t1}))\n"
    )
    env = {
        **os.environ,
        **p.keel_env,
        "REDIS_URL": p.redis.url,
        "MODULES_DIR": str(ROOT / "modules"),
        "ACTIONS_DIR": str(ROOT / "actions"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    runs = []
    for _ in range(starts):
        done = subprocess.run(
            [PYTHON, "-c", code], cwd=p.tmp, env=env, capture_output=True, text=True, check=True, timeout=120
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) * 1e3 for k in ("import", "create_app")}


def span(values: list[float]) -> list[float]:
    return [min(values), max(values)]


def fmt(values: list[float], digits: int = 2) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}–{hi:.{digits}f}"


def met(values: list[float], goal: float, higher: bool = True) -> str:
    ok = [v >= goal if higher else v <= goal for v in values]
    return "yes" if all(ok) else "no" if not any(ok) else "mixed"


def report(config: Config, out: dict[str, Any], args: argparse.Namespace) -> None:
    results: dict[Shape, Result] = out["results"]
    print(f"### {config.label} (gunicorn {config.worker}, 2 workers, deploy/gunicorn.conf.py)")
    print(f"{'shape':<12} {'app':<8} {'worker µs/req':>14} {'redis µs/req':>13} {'req/s':>12}  ratio app/keel CPU")
    for shape, res in results.items():
        keel = res.cpu_us["keel"]
        for app in shape.apps(config):
            ratios = [a / k for a, k in zip(res.cpu_us[app], keel, strict=True)]
            ratio = "" if app == "keel" else f"{fmt(ratios)} (goal >= {GOALS[app]})"
            print(
                f"{shape.label:<12} {app:<8} {fmt(res.cpu_us[app], 0):>14} {fmt(res.redis_us[app], 0):>13} "
                f"{fmt(res.rps[app], 0):>12}  {ratio}"
            )
        calls = max(res.command_calls, 1)
        evalsha = (res.commands or {}).get("EVALSHA", 0) / calls
        other = sum((res.commands or {}).values()) / calls - evalsha
        print(
            f"{'':<12} keel Redis commands in {res.command_calls} requests: {res.commands} "
            f"({evalsha:.2f} EVALSHA + {other:.2f} other per request; background timers included)"
        )
        row: dict[str, Any] = {
            "measure": "CPU per request: other / Keel",
            "shape": shape.label,
            "worker": config.worker,
            "redis": "yes" if config.redis else "no",
            "keel": f"{statistics.median(keel):.0f} µs",
            "redis_cmds": f"{evalsha:.2f} EVALSHA + {other:.2f} other",
        }
        verdicts = []
        for app, column in (("bare", "vs_bare"), ("minimal", "vs_minimal"), ("peer", "vs_equivalent")):
            if app in res.cpu_us:
                ratios = [a / k for a, k in zip(res.cpu_us[app], keel, strict=True)]
                row[column] = span(ratios)
                verdicts.append(met(ratios, GOALS[app]))
        row["goal"] = "≥ 0.65 / 2.0 / 3.0"
        row["met"] = "yes" if set(verdicts) == {"yes"} else "no" if set(verdicts) == {"no"} else "mixed"
        emit(row)
    if out["latency"]:
        runs: dict[str, list[Load]] = out["latency"]
        print("open loop at 50 % of each app's capacity, GET user (latency from the due time):")
        for app, loads in runs.items():
            for load in loads:
                print(
                    f"  {app:<5} {load.requests:>6} requests at {load.requests / load.wall_s:>6.0f}/s: "
                    f"p50 {load.percentile(0.5) * 1e3:6.2f} ms, p99 {load.percentile(0.99) * 1e3:6.2f} ms, "
                    f"non-200 {load.requests - load.statuses[200]}, client late by up to {load.late_s * 1e3:.1f} ms"
                )
        p99 = [k.percentile(0.99) / b.percentile(0.99) for k, b in zip(runs["keel"], runs["bare"], strict=True)]
        p50 = [k.percentile(0.5) / b.percentile(0.5) for k, b in zip(runs["keel"], runs["bare"], strict=True)]
        print(f"  keel/bare p99 {fmt(p99)} (goal <= 2), p50 {fmt(p50)}")
        emit(
            {
                "measure": "p99 latency at 50 % capacity: Keel / bare",
                "shape": "GET user",
                "worker": config.worker,
                "redis": "yes" if config.redis else "no",
                "keel": f"{statistics.median(k.percentile(0.99) for k in runs['keel']) * 1e3:.1f} ms",
                "vs_bare": span(p99),
                "goal": "≤ 2",
                "met": met(p99, 2.0, higher=False),
            }
        )
    mib = {app: [r / 2**20 for r in rss] for app, rss in out["rss"].items()}
    print("RSS per worker (MiB): " + ", ".join(f"{app} {' '.join(f'{v:.0f}' for v in vs)}" for app, vs in mib.items()))
    if config.redis:
        emit(
            {
                "measure": "RSS per worker (MiB), Redis + DB + JWT on",
                "worker": config.worker,
                "keel": f"{max(mib['keel']):.0f} MiB",
                "vs_bare": f"bare {max(mib['bare']):.0f} MiB",
                "vs_minimal": f"{max(mib['minimal']):.0f} MiB",
                "vs_equivalent": f"{max(mib['peer']):.0f} MiB",
                "goal": "≤ 70 MiB",
                "met": "yes" if max(mib["keel"]) <= 70 else "no",
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="GET user with Redis, sync and gevent only")
    # (full, quick) defaults; an explicit option wins
    defaults = {
        "requests": (500, 120),
        "rounds": (3, 2),
        "warmup": (100, 20),
        "command_calls": (100, 30),
        "latency_rounds": (2, 1),
        "latency_seconds": (4.0, 1.5),
        "starts": (5, 1),
    }
    parser.add_argument("--requests", type=int, help="per app, shape and round (500; quick 120)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (3; quick 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads of the closed loop")
    parser.add_argument("--warmup", type=int, help="requests per app and shape before measuring (100; quick 20)")
    parser.add_argument("--command-calls", type=int, help="Keel requests under MONITOR per shape (100; quick 30)")
    parser.add_argument("--latency-rounds", type=int, help="paced runs per app (2; quick 1)")
    parser.add_argument("--latency-seconds", type=float, help="length of a paced run (4; quick 1.5)")
    parser.add_argument("--starts", type=int, help="fresh processes timing create_app (5; quick 1)")
    args = parser.parse_args()
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    if args.quick:
        configs = [Config(True, "sync"), Config(True, "gevent")]
        shapes = [Shape("GET", "user")]
    else:
        configs = [Config(r, w) for w in ("sync", "gevent") for r in (True, False)]
        shapes = [Shape(m, a) for m in ("GET", "POST") for a in AUTHS]
    tmp = Path(tempfile.mkdtemp(prefix="keel-shapes-"))
    started = time.monotonic()
    p = project(tmp)
    try:
        print(
            f"{'quick run: GET user with Redis only' if args.quick else 'full matrix'}; {args.rounds} rounds x "
            f"{args.requests} requests per app and shape, {args.concurrency} client threads, new connection per "
            f"request (Connection: close) for every app; ranges are min–max over rounds"
        )
        for config in configs:
            report(config, measure_config(config, shapes, p, args), args)
        boot = startup(p, args.starts)
        print(
            f"\nstart-up with the shipped modules and Redis, median of {args.starts} fresh processes: "
            f"import core {boot['import']:.0f} ms, create_app {boot['create_app']:.0f} ms"
        )
        emit(
            {
                "measure": "start-up: create_app with the shipped modules (median, fresh processes)",
                "keel": f"{boot['create_app']:.0f} ms (+ import {boot['import']:.0f} ms)",
            }
        )
    finally:
        p.redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"shapes: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
