"""Shared pieces of the actions benchmarks: a throw-away project (module + YAML), its gunicorn
servers (:mod:`harness`) and load runs (``wrk`` when installed, else the harness's Python
client). Not a test; see the ``actions_*.py`` scripts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT, Gunicorn, closed_loop, http_request

BENCH_MODULE = """
from core import BaseModule, action


class BenchMod(BaseModule):
    name = "benchmod"

    def initialize(self, app_manager):
        pass

    @action
    def trivial(self, params, ctx):
        return params
"""

TRIVIAL_YAML = """\
version: 1
module: benchmod
actions:
  trivial:
    handler: trivial
    description: A public action with three parameters.
    methods: [GET]
    auth: public
    params:
      a: {type: integer, minimum: 0, maximum: 1000}
      b: {type: string, maxLength: 20}
      c: {type: boolean, default: false}
"""

# The WSGI apps gunicorn serves: BENCH_APP=plain (Flask alone) or keel (create_app()).
APPS_PY = """
import os
import uuid

from flask import Flask, jsonify, request


def _bare(app):
    @app.get("/bare")
    def bare():
        a = request.args
        result = {"a": int(a["a"]), "b": a["b"], "c": a.get("c", "false") == "true"}
        return jsonify({"success": True, "action": "trivial", "result": result, "request_id": uuid.uuid4().hex})

    return app


if os.environ["BENCH_APP"] == "plain":
    app = _bare(Flask("bare"))
else:
    from core import create_app

    app = _bare(create_app())
"""


def make_project(files: dict[str, str] | None = None) -> Path:
    """A temp dir with ``mods/benchmod``, ``acts/*.yaml``, ``secrets/`` and ``bench_apps.py``."""
    root = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    (root / "mods" / "benchmod").mkdir(parents=True)
    (root / "mods" / "benchmod" / "__init__.py").write_text(BENCH_MODULE)
    (root / "acts").mkdir()
    (root / "secrets").mkdir()
    for name, text in (files if files is not None else {"bench.yaml": TRIVIAL_YAML}).items():
        (root / "acts" / name).write_text(text)
    (root / "bench_apps.py").write_text(APPS_PY)
    return root


def keel_env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{ROOT}:{root}",
        APP_ENV="development",
        ACTIONS_DIR=str(root / "acts"),
        MODULES_DIR=str(root / "mods"),
        SECRETS_DIR=str(root / "secrets"),
        DATABASE_URL=f"sqlite:///{root / 'keel.db'}",
        RATE_LIMIT_IP="100000000/minute",
        LOG_LEVEL="WARNING",
        ACTIONS_RELOAD_INTERVAL="0",
        PROMETHEUS_MULTIPROC_DIR=str(root / "metrics"),
    )
    (root / "metrics").mkdir(exist_ok=True)
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def start_gunicorn(root: Path, app: str, workers: int = 2, **env: str) -> Gunicorn:
    """``gunicorn -k sync`` serving ``bench_apps:app`` of the project ``root`` (``BENCH_APP=app``)."""
    server = Gunicorn(
        app, "bench_apps:app", keel_env(root, BENCH_APP=app, **env), "sync", workers, cwd=root, conf=False
    )
    server.log = root / f"gunicorn-{app}-{server.port}.log"
    server.start().wait()
    return server


@dataclass
class WrkResult:
    requests: int
    rps: float
    non_2xx: int
    errors: int
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000, "m": value * 60_000}[unit]


def wrk(url: str, seconds: float, connections: int = 2) -> WrkResult:
    """``wrk -t1 -c<connections>`` for ``seconds`` (keep-alive), or, without ``wrk``, the harness's
    closed loop with as many threads (a new connection per request)."""
    if shutil.which("wrk") is None:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        load = closed_loop(parts.port or 80, http_request("GET", path), 10**9, connections, seconds=seconds)
        return WrkResult(
            requests=load.requests,
            rps=load.rps,
            non_2xx=sum(n for status, n in load.statuses.items() if not 200 <= status < 400),
            errors=0,
            p50_ms=load.percentile(0.5) * 1e3,
            p99_ms=load.percentile(0.99) * 1e3,
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx_m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    err_m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return WrkResult(
        requests=requests,
        rps=rps,
        non_2xx=int(non_2xx_m.group(1)) if non_2xx_m else 0,
        errors=sum(int(x) for x in err_m.groups()) if err_m else 0,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
    )
