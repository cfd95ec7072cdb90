"""``make bench``: run every benchmark in ``bench/`` in one run and write ``bench/RESULTS.md``.

    .venv/bin/python -m bench            # full runs (several minutes)
    .venv/bin/python -m bench --quick    # short runs (make bench QUICK=1), under 2 minutes
    .venv/bin/python -m bench --only limits_pipeline,actions_dispatch

Each benchmark is a script of its own (read its docstring for what it measures); this runner
starts each one as a subprocess with the arguments below, stops it after its time budget, and
writes what it printed, with the machine's CPU count and the date, to ``bench/RESULTS.md``.
A benchmark that fails or runs over its budget is reported as such and the others still run;
the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Bench:
    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    budget_s: int  # the full run's time limit; the quick run gets a quarter of it


BENCHES = (
    Bench("limits_pipeline", ("--requests", "3000", "--rounds", "3"), ("--requests", "300", "--rounds", "1"), 600),
    Bench("actions_dispatch", ("--seconds", "10"), ("--seconds", "2", "--rounds", "1"), 300),
    Bench("auth_overhead", ("--requests", "2000"), ("--requests", "300"), 180),
    Bench("foundation", ("--requests", "3000", "--starts", "5"), ("--requests", "300", "--starts", "2"), 240),
    Bench(
        "actions_load",
        ("--reloads", "1000", "--gunicorn-seconds", "20"),
        ("--reloads", "50", "--gunicorn-seconds", "3"),
        400,
    ),
    Bench("limits_exactness", ("--repeats", "20"), ("--repeats", "2", "--requests", "200"), 300),
    Bench("state_throughput", ("--seconds", "3"), ("--seconds", "1"), 180),
    Bench(
        "state_lost_update", ("--processes", "16", "--updates", "1000"), ("--processes", "4", "--updates", "100"), 240
    ),
    Bench("ws_fanout", ("--rounds", "3"), ("--rounds", "1", "--receivers", "50", "--messages", "30"), 600),
)


def run(bench: Bench, quick: bool) -> tuple[str, str, float]:
    args = bench.quick if quick else bench.full
    budget = max(30, bench.budget_s // 4) if quick else bench.budget_s
    command = [sys.executable, str(HERE / f"{bench.name}.py"), *args]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=budget, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        return "timeout", f"{out}\n(stopped after {budget} s)", time.monotonic() - started
    status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    output = done.stdout if done.returncode == 0 else done.stdout + "\n" + done.stderr[-4000:]
    return status, output, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under 2 minutes in all)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    options = parser.parse_args()
    wanted = [n for n in options.only.split(",") if n]
    unknown = sorted(set(wanted) - {b.name for b in BENCHES})
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(b.name for b in BENCHES)})")
    selected = [b for b in BENCHES if not wanted or b.name in wanted]
    lines = [
        "# Keel benchmark results",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{'quick' if options.quick else 'full'} run (`make bench{' QUICK=1' if options.quick else ''}`).",
        "Ratios are measured side by side in one run; each section is the benchmark's own output.",
        "",
        "| benchmark | status | seconds |",
        "|---|---|---|",
    ]
    sections: list[str] = []
    failed = False
    for bench in selected:
        print(f"bench: {bench.name} ...", flush=True)
        status, output, seconds = run(bench, options.quick)
        failed |= status != "ok"
        print(f"bench: {bench.name}: {status} in {seconds:.0f} s", flush=True)
        lines.append(f"| {bench.name} | {status} | {seconds:.0f} |")
        sections += ["", f"## {bench.name}", "", "```", output.rstrip(), "```"]
    Path(options.output).write_text("\n".join(lines + sections) + "\n", encoding="utf-8")
    print(f"bench: wrote {options.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
