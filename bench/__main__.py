"""``make bench``: run every benchmark in ``bench/`` in one run and write ``bench/RESULTS.md``.

    .venv/bin/python -m bench            # full runs (several minutes)
    .venv/bin/python -m bench --quick    # short runs (make bench QUICK=1), under 2 minutes
    .venv/bin/python -m bench --only limits_pipeline,actions_dispatch

Each benchmark is a script of its own (read its docstring for what it measures); this runner
starts each one as a subprocess with the arguments below, stops it after its time budget, and
writes what it printed, with the machine's CPU count and the date, to ``bench/RESULTS.md``.
A benchmark that fails or runs over its budget is reported as such and the others still run;
the exit status is 1 when any failed.

``RESULTS.md`` starts with one summary table built from the ``SUMMARY {json}`` lines the
benchmarks print (one row each; keys in ``COLUMNS``, values a string, a number or a ``[min,
max]`` range), then the machine and the date, then each benchmark's own output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Bench:
    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...] | None  # None: full runs only (what it shows, a quick run gets from another)
    budget_s: int  # the full run's time limit
    quick_budget_s: int = 0  # the quick run's

    def args(self, quick: bool) -> tuple[str, ...] | None:
        return self.quick if quick else self.full


# Quick runs (`make bench QUICK=1`) must end within 2 minutes in all, on 2 busy cores: their
# budgets add up to that, and the benchmarks whose point another one covers run in full runs only.
BENCHES = (
    Bench("shapes", (), ("--quick",), 600, 55),
    Bench(
        "ws_fanout",
        ("--rounds", "3"),
        ("--rounds", "1", "--receivers", "30", "--messages", "20", "--bursts", "1", "--users", "2"),
        600,
        45,  # the bare app's first warm-up sometimes waits ~25 s (its Socket.IO message queue)
    ),
    Bench(
        "actions_load",
        ("--reloads", "500", "--gunicorn-seconds", "20"),  # 500 reloads under load: ~170 s on 2 cores
        ("--reloads", "20", "--gunicorn-seconds", "0", "--boots", "1", "--samples", "20"),
        480,
        20,
    ),
    # shapes covers these in a quick run: POST user / GET public against bare Flask and the peer,
    # create_app's start-up, one EVALSHA per authenticated request
    Bench("limits_pipeline", ("--requests", "3000", "--rounds", "3"), None, 600),
    Bench("foundation", ("--requests", "3000", "--starts", "5"), None, 240),
    Bench("auth_overhead", ("--requests", "2000"), None, 180),
    Bench("actions_dispatch", ("--seconds", "10"), None, 300),
    # processes that each build an app: too slow to start for a quick run
    Bench("limits_exactness", ("--repeats", "20"), None, 420),
    Bench("state_throughput", ("--seconds", "3"), None, 180),
    Bench("state_lost_update", ("--processes", "16", "--updates", "500"), None, 600),  # one hot record: slow
    Bench("profile_pipeline", ("--requests", "50"), None, 300),  # needs valgrind and gcc
)


# The summary table: (SUMMARY key, column title). "measure" is required.
COLUMNS = (
    ("measure", "measure"),
    ("shape", "shape"),
    ("worker", "worker"),
    ("redis", "Redis"),
    ("keel", "Keel"),
    ("vs_bare", "vs bare Flask"),
    ("vs_minimal", "vs minimal peer"),
    ("vs_equivalent", "vs equivalent peer"),
    ("redis_cmds", "Redis cmds/req"),
    ("goal", "goal"),
    ("met", "met"),
)
KEYS = {key for key, _ in COLUMNS}
PREFIX = "SUMMARY "
SKIPPED = "skipped (full runs only)"


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # "ok", "timeout", "failed (exit N)"
    output: str
    seconds: float


def parse_summary(output: str) -> tuple[list[dict[str, Any]], list[str], str]:
    """The ``SUMMARY`` records of a benchmark's output, the problems with unreadable ones, and
    the output without those lines (the human part)."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    human: list[str] = []
    for line in output.splitlines():
        if not line.startswith(PREFIX):
            human.append(line)
            continue
        try:
            record = json.loads(line[len(PREFIX) :])
        except ValueError as exc:
            problems.append(f"not JSON ({exc}): {line[:200]}")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("measure"), str):
            problems.append(f"not an object with a measure: {line[:200]}")
        elif unknown := sorted(set(record) - KEYS):
            problems.append(f"unknown key(s) {', '.join(unknown)}: {line[:200]}")
        elif bad := [k for k, v in record.items() if not _valid(v)]:
            problems.append(f"unreadable value(s) of {', '.join(bad)}: {line[:200]}")
        else:
            records.append(record)
    return records, problems, "\n".join(human)


def _valid(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    return value is None or isinstance(value, str | int | float)


def cell(value: Any) -> str:
    """A range ``[lo, hi]`` as ``lo–hi`` (one number when both read the same), numbers with two
    decimals, text as it is (``|`` escaped)."""
    if value is None:
        return ""
    if isinstance(value, list):
        lo, hi = (f"{v:.2f}" for v in value)
        return lo if lo == hi else f"{lo}–{hi}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")


def summary_table(outcomes: list[Outcome]) -> tuple[list[str], bool]:
    """The markdown summary table of every benchmark's records (a row per record, a row per
    failed benchmark or unreadable line) and whether every SUMMARY line was readable."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " | from |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    readable = True
    for outcome in outcomes:
        records, problems, _ = parse_summary(outcome.output)
        for record in records:
            lines.append("| " + " | ".join(cell(record.get(key)) for key, _ in COLUMNS) + f" | {outcome.name} |")
        for problem in problems:
            readable = False
            lines.append(
                f"| **unreadable SUMMARY line**: {cell(problem)} |{' |' * (len(COLUMNS) - 1)} {outcome.name} |"
            )
        if outcome.status not in ("ok", SKIPPED):
            lines.append(f"| **{outcome.status}** |{' |' * (len(COLUMNS) - 1)} {outcome.name} |")
    return lines, readable


def results_markdown(outcomes: list[Outcome], *, quick: bool, when: datetime, cpus: int | None) -> tuple[str, bool]:
    """``RESULTS.md``: the summary table, the machine and the date, each benchmark's output."""
    table, readable = summary_table(outcomes)
    lines = [
        "# Keel benchmark results",
        "",
        "Ratios are measured side by side in one run (several interleaved rounds: ranges are min–max",
        'over rounds); "other / Keel" above 1 means Keel spends less CPU per request. Details below.',
        "",
        *table,
        "",
        f"{when:%Y-%m-%d %H:%M} UTC, {cpus} CPUs, Python {sys.version.split()[0]}, "
        f"{'quick' if quick else 'full'} run (`make bench{' QUICK=1' if quick else ''}`).",
        "",
        "| benchmark | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {o.name} | {o.status} | {o.seconds:.0f} |" for o in outcomes]
    for outcome in outcomes:
        if outcome.status == SKIPPED:
            continue
        human = parse_summary(outcome.output)[2]
        lines += ["", f"## {outcome.name}", "", "```", human.rstrip(), "```"]
    return "\n".join(lines) + "\n", readable


def run(bench: Bench, quick: bool) -> Outcome:
    args = bench.args(quick)
    if args is None:
        return Outcome(bench.name, SKIPPED, "", 0.0)
    budget = bench.quick_budget_s if quick else bench.budget_s
    command = [sys.executable, str(HERE / f"{bench.name}.py"), *args]
    started = time.monotonic()
    # Its own session, so that a benchmark stopped at its budget takes its servers (gunicorn,
    # redis-server, worker processes) with it; unbuffered, so that what it printed is kept.
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        out, err = stop_group(proc)
        return Outcome(bench.name, "timeout", f"{out}\n(stopped after {budget} s)", time.monotonic() - started)
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): leave nothing running
            stop_group(proc)
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    output = out if proc.returncode == 0 else out + "\n" + err[-4000:]
    return Outcome(bench.name, status, output, time.monotonic() - started)


def stop_group(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM to the benchmark's process group (gunicorn stops its workers), SIGKILL to what
    is left after 10 s; what it printed so far."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            out, err = proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the script is gone; its servers may still be stopping
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(proc.pid):
                time.sleep(0.2)
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
        return out or "", err or ""
    return "", ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


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
    outcomes = []
    started = time.monotonic()
    for bench in selected:
        print(f"bench: {bench.name} ...", flush=True)
        outcome = run(bench, options.quick)
        outcomes.append(outcome)
        print(f"bench: {bench.name}: {outcome.status} in {outcome.seconds:.0f} s", flush=True)
    text, readable = results_markdown(outcomes, quick=options.quick, when=datetime.now(UTC), cpus=os.cpu_count())
    Path(options.output).write_text(text, encoding="utf-8")
    print(f"bench: wrote {options.output} in {time.monotonic() - started:.0f} s")
    if not readable:
        print("bench: some SUMMARY lines were unreadable (see the table)", file=sys.stderr)
    return 0 if readable and all(o.status in ("ok", SKIPPED) for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
