"""Dispatch overhead: a public action with 3 parameters vs a bare Flask route (issue 3).

    .venv/bin/python bench/actions_dispatch.py [--seconds 10]

Three servers, each gunicorn with 2 sync workers, loaded in turn by wrk (1 thread, 2
connections) on 127.0.0.1:
- ``plain``: Flask alone, ``GET /bare?a=5&b=hello&c=true`` building the same JSON envelope;
- ``keel /bare``: the same route inside a Keel app (request id, metrics, error boundary, ...);
- ``keel action``: ``GET /actions/trivial?a=5&b=hello&c=true`` (YAML: auth public, 3 params).
Reported per server: requests/s, CPU µs per request (utime+stime of the workers / requests),
latency p50/p99, non-2xx. The ratio that matters is CPU-per-request of plain Flask divided by
that of the action (1.0 = as cheap as bare Flask; target ≥ 0.85).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actions_common import make_project, start_gunicorn, wrk

QUERY = "a=5&b=hello&c=true"


def measure(root: Path, app: str, path: str, seconds: float) -> dict[str, float]:
    server = start_gunicorn(root, app)
    try:
        url = f"http://127.0.0.1:{server.port}{path}?{QUERY}"
        wrk(url, 2)  # warm-up
        before = server.cpu_seconds()
        result = wrk(url, seconds)
        cpu = server.cpu_seconds() - before
    finally:
        server.stop()
    return {
        "rps": result.rps,
        "cpu_us": cpu / max(result.requests, 1) * 1e6,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "bad": result.non_2xx + result.errors,
        "requests": result.requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the least disturbed one counts")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    root = make_project()
    servers = {
        "plain Flask /bare": ("plain", "/bare"),
        "keel /bare": ("keel", "/bare"),
        "keel /actions/trivial": ("keel", "/actions/trivial"),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, (app, path) in servers.items():
            runs[name].append(measure(root, app, path, args.seconds))
    rows = {name: min(rs, key=lambda r: r["cpu_us"]) for name, rs in runs.items()}
    print(f"{args.rounds} round(s) of {args.seconds:.0f} s each; best round per server (lowest CPU per request)")
    print(f"{'server':<24} {'req/s':>8} {'CPU µs/req':>11} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8}")
    for name, r in rows.items():
        cols = f"{r['rps']:>8.0f} {r['cpu_us']:>11.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['bad']:>8.0f}"
        print(f"{name:<24} {cols}")
    plain, keel_bare, action = (rows[k]["cpu_us"] for k in rows)
    print(f"action efficiency vs plain Flask (CPU/req ratio): {plain / action:.2f}x")
    print(f"action efficiency vs a route in the same Keel app: {keel_bare / action:.2f}x")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
