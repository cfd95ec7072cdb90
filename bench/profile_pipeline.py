"""Where a request's CPU goes: deterministic instruction counts of Keel's pipeline, per phase.

    .venv/bin/python bench/profile_pipeline.py [--requests 50] [--multiproc] [--no-rss]

Requests are WSGI calls with a prebuilt environ (no test client, no sockets besides Redis), run
in one process under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``. The app boots
uninstrumented; each measured loop turns instrumentation on around itself (a 10-line C helper,
built with ``gcc`` against ``valgrind/callgrind.h``, issues the client requests) and dumps its
counts. Shapes:

- ``bare``: a bare Flask route (``jsonify`` of two query parameters);
- ``get_user``: ``GET /actions/<name>?title=…&priority=2``, ``auth: user`` (a JWT), Redis limiter;
- ``post_user``: ``POST /actions/<name>`` with a JSON body, ``auth: user``, Redis limiter;
- ``get_public``: the GET action with ``auth: public`` and no Redis (in-process limiter).

Each shape runs twice: plainly (the instructions per request) and with its phases wrapped,
each phase called through its own C function so that callgrind's inclusive cost of that
function is the phase's cost (the wrapping's own cost is measured by a no-op phase and taken
out). ``Flask/Werkzeug`` is the remainder: the total minus every phase — the WSGI request
and response objects, the contexts, hook dispatch. Counts are instructions (Ir), not time:
on the machine that filed issue 13, 1 kIr ≈ 0.3 µs of CPU.

``--multiproc`` sets ``PROMETHEUS_MULTIPROC_DIR`` (as ``deploy/gunicorn.conf.py`` does).
Unless ``--no-rss``, also prints the RSS of a process after ``create_app`` with every manager
on, and the ``create_app`` start-up time (best and worst of 3 runs, not under valgrind).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACTIONS = """\
version: 1
module: benchecho
actions:
  get_user:
    handler: echo
    methods: [GET]
    auth: user
    params:
      title: {type: string, required: true, minLength: 1, maxLength: 200}
      priority: {type: integer, minimum: 1, maximum: 5, default: 3}
  post_user:
    handler: echo
    methods: [POST]
    auth: user
    params:
      title: {type: string, required: true, minLength: 1, maxLength: 200}
      priority: {type: integer, minimum: 1, maximum: 5, default: 3}
  get_public:
    handler: echo
    methods: [GET]
    auth: public
    params:
      title: {type: string, required: true, minLength: 1, maxLength: 200}
      priority: {type: integer, minimum: 1, maximum: 5, default: 3}
"""

# Phases: name → (label, parent phase or None). A phase's "self" cost excludes its children.
PHASES = {
    "routing": "routing (URL map match)",
    "before": "pipeline before (rest)",
    "request_id": "request id",
    "view": "view / dispatch (rest)",
    "guard": "guard (rest)",
    "auth": "auth / JWT",
    "plan": "limiter plan (rest)",
    "store": "limiter store call (EVALSHA)",
    "params": "params validation",
    "handler": "handler",
    "json": "JSON envelope",
    "after": "pipeline after: security headers (rest)",
    "rl_headers": "rate-limit headers",
    "metrics": "metrics",
    "access_log": "access log",
    "noop": "(calibration)",
    "outer": "(calibration)",
}

PROBE_C = """
#include <valgrind/callgrind.h>
typedef void (*cb_t)(void);
void keel_begin(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void keel_end(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
void keel_loop(cb_t f) { f(); }
"""


def build_probe(tmp: Path) -> Path:
    src = tmp / "keelprobe.c"
    src.write_text(PROBE_C)
    lib = tmp / "libkeelprobe.so"
    subprocess.run(
        ["gcc", "-O0", "-fno-optimize-sibling-calls", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True
    )
    return lib


# --- the measured process (runs under valgrind) -------------------------------------------------

CB = ctypes.CFUNCTYPE(None)


class Probe:
    """Phase wrappers: a wrapped function runs inside its phase's ctypes callback (whose
    inclusive cost callgrind reports under the callback's address)."""

    def __init__(self, lib_path: str) -> None:
        self.lib = ctypes.CDLL(lib_path)
        self.lib.keel_end.argtypes = [ctypes.c_char_p]
        self.pending: list[Any] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.children: dict[str, int] = defaultdict(int)  # nested wrapped calls made inside a phase
        self.parent: dict[str, str | None] = {}
        self.stack: list[str] = []
        self.enabled = False

        def run_pending() -> None:
            self.pending.pop()()

        # One ctypes callback per phase: callgrind names each callback's trampoline (anonymous
        # memory) by its address, so the trampoline's inclusive cost is the phase's.
        self.cb = CB(run_pending)
        self.callbacks = {p: CB(run_pending) for p in PHASES}
        self.addresses = {p: f"0x{ctypes.cast(cb, ctypes.c_void_p).value:016x}" for p, cb in self.callbacks.items()}
        self.run = self.lib.keel_loop
        self.run.argtypes = [CB]
        self.run.restype = None

    def wrap(self, phase: str, fn: Any) -> Any:
        run, cb, probe = self.run, self.callbacks[phase], self

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not probe.enabled:
                return fn(*args, **kwargs)
            box: list[Any] = []

            def call() -> None:
                try:
                    box.append((True, fn(*args, **kwargs)))
                except BaseException as exc:
                    box.append((False, exc))

            stack = probe.stack
            parent = stack[-1] if stack else None
            probe.parent.setdefault(phase, parent)
            if parent is not None:
                probe.children[parent] += 1
            probe.calls[phase] += 1
            stack.append(phase)
            probe.pending.append(call)
            run(cb)
            stack.pop()
            ok, value = box[0]
            if ok:
                return value
            raise value

        wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapped

    def loop(self, name: str, body: Any) -> None:
        box: list[Any] = []

        def call() -> None:
            try:
                body()
            except BaseException as exc:
                box.append(exc)

        self.pending.append(call)
        self.lib.keel_begin()
        self.run(self.cb)
        self.lib.keel_end(name.encode())
        if box:
            raise box[0]


def _patch(obj: Any, attr: str, probe: Probe, phase: str) -> None:
    setattr(obj, attr, probe.wrap(phase, getattr(obj, attr)))


def instrument_flask(app: Any, probe: Probe) -> None:
    import flask.ctx

    if not hasattr(flask.ctx.RequestContext.match_request, "__wrapped__"):  # one class, several apps
        _patch(flask.ctx.RequestContext, "match_request", probe, "routing")
    _patch(app.json, "response", probe, "json")


def instrument_bare(app: Any, probe: Probe) -> None:
    instrument_flask(app, probe)
    app.view_functions["bare"] = probe.wrap("handler", app.view_functions["bare"])


def instrument_keel(app: Any, probe: Probe) -> None:
    import core.http.access_log
    import core.http.auth
    import core.http.dispatch
    import core.http.guard
    import core.http.limits
    import core.http.metrics
    import core.http.pipeline
    from core.managers.rate_limit import RateLimiterManager

    instrument_flask(app, probe)
    pipe = core.http.pipeline.pipeline(app)
    app.before_request_funcs[None] = [
        probe.wrap("before", f) if f == pipe._before else f for f in app.before_request_funcs[None]
    ]
    app.after_request_funcs[None] = [
        probe.wrap("after", f) if f == pipe._after else f for f in app.after_request_funcs[None]
    ]
    for i, step in enumerate(pipe.after):
        if getattr(step, "__name__", "") == "_add_headers":
            pipe.after[i] = probe.wrap("rl_headers", step)
        elif isinstance(step, core.http.metrics._RequestCounter):
            pipe.after[i] = probe.wrap("metrics", step)
    _patch(core.http.pipeline, "new_request_id", probe, "request_id")
    _patch(core.http.access_log, "log_request", probe, "access_log")
    _patch(core.http.dispatch, "dispatch", probe, "view")
    _patch(core.http.dispatch, "collect_params", probe, "params")
    _patch(core.http.guard, "check", probe, "guard")
    for name in ("authenticate", "revocation_keys", "check_revocation"):
        _patch(core.http.auth, name, probe, "auth")
    _patch(core.http.limits, "check_request", probe, "plan")
    _patch(RateLimiterManager, "evaluate", probe, "store")
    for action in app.extensions["keel.actions"].registry.actions.values():
        object.__setattr__(action, "handler", probe.wrap("handler", action.handler))  # a frozen dataclass


def _environ(path: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None) -> Any:
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(
        path=path,
        method=method,
        headers=headers or {},
        json=body,
        # not 127.0.0.1: development exempts loopback from every limit
        environ_base={"REMOTE_ADDR": "203.0.113.7", "HTTP_USER_AGENT": "profile"},
    )
    base = builder.get_environ()
    data = base["wsgi.input"].read()
    builder.close()

    def make() -> dict[str, Any]:
        env = dict(base)
        env["wsgi.input"] = io.BytesIO(data)
        return env

    return make


def _call(app: Any, make: Any) -> str:
    status: list[str] = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(s)

    it = app(make(), start_response)
    b"".join(it)
    if hasattr(it, "close"):
        it.close()
    return status[0]


def keel_app(tmp: Path, redis_url: str | None, prefix: str) -> Any:
    from core import create_app

    config: dict[str, Any] = {
        "APP_ENV": "development",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "DATABASE_URL": f"sqlite:///{tmp / f'keel-{bool(redis_url)}.db'}",
        "SECRETS_DIR": str(tmp),
        "ACTIONS_DIR": str(tmp / "actions"),
        "ACTIONS_RELOAD_INTERVAL": 0,
        "MODULES_DIR": str(ROOT / "bench" / "bench_modules"),
        "RATE_LIMIT_IP": "1000000000/minute",
        "RATE_LIMIT_USER": "1000000000/minute",
    }
    if redis_url:
        config.update(REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix)
    return create_app(config, env={})


def bare_app() -> Any:
    from flask import Flask, jsonify, request

    app = Flask("bare")

    @app.get("/bare")
    def bare() -> Any:
        a = request.args
        return jsonify({"success": True, "result": {"title": a["title"], "priority": int(a["priority"])}})

    return app


def inner(args: argparse.Namespace) -> None:
    probe = Probe(args.probe)
    tmp = Path(args.tmp)
    (tmp / "actions").mkdir(exist_ok=True)
    (tmp / "actions" / "bench.yaml").write_text(ACTIONS)
    prefix = f"keelprofile:{uuid.uuid4().hex[:8]}:"
    real_stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")
    keel = keel_app(tmp, args.redis, prefix)
    public = keel_app(tmp, None, prefix)
    am = keel.extensions["keel"]
    with keel.app_context():
        user = am.jwt.users.create("profile", "profile-password-123")
        token = am.jwt.issue_pair(user)["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    query = "?title=Write+the+profile&priority=2"
    shapes = {
        "bare": (bare_app(), _environ("/bare" + query)),
        "get_user": (keel, _environ("/actions/get_user" + query, headers=auth)),
        "post_user": (
            keel,
            _environ("/actions/post_user", "POST", auth, {"title": "Write the profile", "priority": 2}),
        ),
        "get_public": (public, _environ("/actions/get_public" + query)),
    }
    for name in args.shapes:
        app, make = shapes[name]
        for _ in range(20):  # warm-up: caches, the script load, the label children
            status = _call(app, make)
            assert status.startswith("200"), (name, status)
    # Without Redis the bans table is re-read every 2 s: ~1 request in 2,000 natively, but one in
    # a few dozen at valgrind's speed. Not counted: it would inflate get_public 50-fold.
    public.extensions["keel"].limiter.bans._next_sync = float("inf")
    # As a production worker does after boot (deploy/gunicorn.conf.py, post_worker_init): the
    # objects alive now leave the collector's generations, so a full collection's cost does not
    # land at random in one shape's loop (it made the totals swing by ±60 kIr per request).
    gc.collect()
    gc.freeze()
    n = args.requests

    def run(app: Any, make: Any) -> None:
        for _ in range(n):
            _call(app, make)

    for name in args.shapes:
        app, make = shapes[name]
        probe.loop(f"total:{name}", lambda app=app, make=make: run(app, make))
    instrument_bare(shapes["bare"][0], probe)
    instrument_keel(keel, probe)
    instrument_keel(public, probe)

    noop = probe.wrap("noop", lambda: None)
    outer = probe.wrap("outer", noop)
    calls: dict[str, Any] = {}
    for name in args.shapes:
        app, make = shapes[name]
        probe.calls.clear()
        probe.children.clear()
        probe.parent.clear()
        probe.enabled = True

        def body(app: Any = app, make: Any = make) -> None:
            for _ in range(n):
                _call(app, make)
                noop()
                outer()

        probe.loop(f"phases:{name}", body)
        probe.enabled = False
        calls[name] = {"calls": dict(probe.calls), "children": dict(probe.children), "parent": dict(probe.parent)}
    sys.stdout.close()
    sys.stdout = real_stdout
    if args.redis:
        import redis

        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    am.dispose()
    public.extensions["keel"].dispose()
    calls["_addresses"] = probe.addresses
    (tmp / "calls.json").write_text(json.dumps(calls))


# --- the driver ---------------------------------------------------------------------------------


def parse_callgrind(path: Path, wanted: set[str]) -> tuple[str, int, dict[str, int]]:
    """(dump description, total Ir, inclusive Ir of each function named in ``wanted``)."""
    names: dict[str, str] = {}
    desc, total = "", 0
    inclusive: dict[str, int] = defaultdict(int)
    current = ""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("desc: Trigger:"):
            desc = line.split("Client Request:", 1)[-1].strip()
        elif line.startswith(("summary:", "totals:")):
            total = max(total, int(line.split()[1]))
        elif line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=(?:\((\d+)\))?\s*(.*)", line)
            assert m is not None
            ident, name = m.group(1), m.group(2)
            if ident is not None:
                if name:
                    names[ident] = name
                name = names[ident]
            if line.startswith("fn="):
                current = name
        elif line and (line[0].isdigit() or line[0] in "+-*") and current in wanted:
            # the function's own cost lines and, after a calls= line, a call's inclusive cost
            parts = line.split()
            if len(parts) >= 2:
                inclusive[current] += int(parts[1])
    return desc, total, dict(inclusive)


def profile(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="keel-profile-"))
    try:
        lib = build_probe(tmp)
        env = dict(os.environ, PYTHONHASHSEED="0")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if args.multiproc:
            (tmp / "metrics").mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--compress-strings=no",  # names are shared across dumps otherwise
            f"--callgrind-out-file={tmp}/cg.out",
            sys.executable,
            __file__,
            "--inner",
            "--probe",
            str(lib),
            "--tmp",
            str(tmp),
            "--requests",
            str(args.requests),
            "--redis",
            args.redis,
            "--shapes",
            *args.shapes,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-5000:])
            raise SystemExit(f"the profiled process failed ({proc.returncode})")
        dumps = {}
        calls = json.loads((tmp / "calls.json").read_text())
        phase_of = {address: phase for phase, address in calls.pop("_addresses").items()}
        for f in tmp.glob("cg.out*"):
            desc, total, inclusive = parse_callgrind(f, set(phase_of))
            if desc:
                dumps[desc] = (total, {phase_of[a]: v for a, v in inclusive.items()})
        return {"dumps": dumps, "calls": calls}
    finally:
        if not os.environ.get("KEEL_PROFILE_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def split(result: dict[str, Any], shape: str, n: int) -> tuple[float, dict[str, float]]:
    """(Ir per request, Ir per request of each phase, its own cost without its children)."""
    total = result["dumps"][f"total:{shape}"][0] / n
    inclusive = result["dumps"][f"phases:{shape}"][1]
    info = result["calls"][shape]
    calls, children, parent = info["calls"], info["children"], info["parent"]
    c = inclusive["noop"] / calls["noop"]  # the wrapping's cost inside a phase's callback
    f = inclusive["outer"] / calls["outer"] - c  # a wrapped call's whole cost, seen by its caller
    true_incl = {p: inclusive.get(p, 0) - calls[p] * c for p in calls if p not in ("noop", "outer")}
    own: dict[str, float] = {}
    for p, incl in true_incl.items():
        kids = [q for q in true_incl if parent.get(q) == p]
        own[p] = (incl - children.get(p, 0) * (f - c) - sum(true_incl[q] for q in kids)) / n
    top = sum(v for p, v in true_incl.items() if parent.get(p) is None) / n
    own["flask"] = total - top
    return total, own


def measure_boot(args: argparse.Namespace) -> list[tuple[float, float]]:
    """(RSS MiB after create_app with every manager on, create_app seconds), 3 fresh processes."""
    code = r"""
import os, sys, tempfile, time, resource
sys.path.insert(0, sys.argv[1])
tmp = tempfile.mkdtemp(prefix="keel-boot-")
t0 = time.perf_counter()
from core import create_app
app = create_app({"APP_ENV": "development", "LOG_LEVEL": "WARNING", "DATABASE_URL": f"sqlite:///{tmp}/k.db",
                  "SECRETS_DIR": tmp, "REDIS_URL": sys.argv[2], "ACTIONS_RELOAD_INTERVAL": 0}, env={})
t1 = time.perf_counter()
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
print(rss, t1 - t0)
app.extensions["keel"].dispose()
"""
    out = []
    for _ in range(3):
        env = dict(os.environ, PYTHONHASHSEED="0")
        if args.multiproc:
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="keel-metrics-")
        proc = subprocess.run(
            [sys.executable, "-c", code, str(ROOT), args.redis], env=env, capture_output=True, text=True, check=True
        )
        rss, secs = proc.stdout.split()[-2:]
        out.append((float(rss), float(secs)))
    return out


ORDER = [
    "flask",
    "routing",
    "before",
    "request_id",
    "view",
    "guard",
    "auth",
    "plan",
    "store",
    "params",
    "handler",
    "json",
    "rl_headers",
    "after",
    "metrics",
    "access_log",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--multiproc", action="store_true", help="prometheus_client multiprocess mode")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS and start-up measurement")
    parser.add_argument("--shapes", nargs="+", default=["bare", "get_user", "post_user", "get_public"])
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    if args.inner:
        inner(args)
        return
    started = time.perf_counter()
    result = profile(args)
    n = args.requests
    rows = {shape: split(result, shape, n) for shape in args.shapes}
    mode = "multiprocess" if args.multiproc else "single-process"
    print(f"### Instructions per request (kIr, callgrind, {n} requests per shape, prometheus_client {mode})\n")
    print("| phase | " + " | ".join(args.shapes) + " |")
    print("|---|" + "---:|" * len(args.shapes))
    print("| **total** | " + " | ".join(f"**{rows[s][0] / 1e3:.0f}**" for s in args.shapes) + " |")
    for phase in ORDER:
        label = "Flask/Werkzeug (WSGI, contexts, hooks)" if phase == "flask" else PHASES[phase]
        cells = []
        for s in args.shapes:
            v = rows[s][1].get(phase)
            cells.append("–" if v is None else f"{v / 1e3:.1f}")
        if any(c != "–" for c in cells):
            print(f"| {label} | " + " | ".join(cells) + " |")
    if "bare" in rows:
        print()
        for s in args.shapes:
            if s != "bare":
                print(f"- {s}: {rows[s][0] / rows['bare'][0]:.2f}× the bare route's instructions")
        for s in args.shapes:
            if s != "bare":
                record = {
                    "measure": "instructions per request, in process (callgrind): bare / Keel",
                    "shape": s,
                    "keel": f"{rows[s][0] / 1e3:.0f} kIr",
                    "vs_bare": f"{rows['bare'][0] / rows[s][0]:.2f}",
                    "goal": "≥ 0.65",
                    "met": "yes" if rows["bare"][0] / rows[s][0] >= 0.65 else "no",
                }
                print("SUMMARY " + json.dumps(record))
    boot = [] if args.no_rss else measure_boot(args)
    if boot:
        rss = [b[0] for b in boot]
        secs = [b[1] for b in boot]
        print(
            f"\nRSS after create_app, every manager on: {min(rss):.1f}–{max(rss):.1f} MiB; "
            f"create_app: {min(secs) * 1e3:.0f}–{max(secs) * 1e3:.0f} ms (3 processes)"
        )
    print(f"\n(profile took {time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": {s: {"total": rows[s][0], **rows[s][1]} for s in args.shapes},
                    "boot": boot,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
