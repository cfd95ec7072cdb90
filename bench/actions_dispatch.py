"""Dispatch overhead: a public action with 3 parameters vs a bare Flask route (issue 3).

    .venv/bin/python bench/actions_dispatch.py [--seconds 10]

Three servers, each gunicorn with 2 sync workers, loaded in turn by wrk (1 thread, 2
connections; without wrk, the harness's Python client with 2 threads) on 127.0.0.1:
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
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actions_common import make_project, start_gunicorn, wrk
from harness import summary

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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (ranges are min–max over rounds)")
    args = parser.parse_args()
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
    client = "wrk -t1 -c2 (keep-alive)"
    if shutil.which("wrk") is None:
        client = "the Python client, 2 threads, new connection per request"
    print(f"{args.rounds} round(s) of {args.seconds:.0f} s each, {client}; min–max over rounds")
    print(f"{'server':<24} {'req/s':>11} {'CPU µs/req':>11} {'p50 ms':>11} {'p99 ms':>11} {'non-2xx':>8}")

    def rng(values: list[float], digits: int) -> str:
        lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
        return lo if lo == hi else f"{lo}–{hi}"

    for name, rs in runs.items():
        cols = [rng([r[k] for r in rs], d) for k, d in (("rps", 0), ("cpu_us", 0), ("p50_ms", 2), ("p99_ms", 2))]
        print(f"{name:<24} {cols[0]:>11} {cols[1]:>11} {cols[2]:>11} {cols[3]:>11} {sum(r['bad'] for r in rs):>8.0f}")
    plain, keel_bare, action = ([r["cpu_us"] for r in runs[k]] for k in servers)
    vs_plain = [p / a for p, a in zip(plain, action, strict=True)]
    vs_route = [k / a for k, a in zip(keel_bare, action, strict=True)]
    print(f"action efficiency vs plain Flask (CPU/req ratio): {rng(vs_plain, 2)}x")
    print(f"action efficiency vs a route in the same Keel app: {rng(vs_route, 2)}x")
    summary(
        {
            "measure": "CPU per request: bare / Keel public action, 3 query parameters",
            "shape": "GET public",
            "worker": "sync",
            "redis": "no",
            "keel": f"{statistics.median(action):.0f} µs",
            "vs_bare": [min(vs_plain), max(vs_plain)],
            "goal": "≥ 0.85",
            "met": "yes" if min(vs_plain) >= 0.85 else "no" if max(vs_plain) < 0.85 else "mixed",
        }
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
