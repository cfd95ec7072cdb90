"""``python -m bench``'s RESULTS.md, built from canned benchmark outputs (no benchmark runs here):
the summary table comes first, one row per ``SUMMARY`` line, and a line it cannot read — or a
benchmark that failed — shows in the table instead of silently vanishing."""

from __future__ import annotations

import io
import json
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import harness
from bench.__main__ import BENCHES, COLUMNS, HERE, SKIPPED, Outcome, parse_summary, results_markdown, summary_table

WHEN = datetime(2026, 12, 2, 3, 4, tzinfo=UTC)

SHAPES_OUTPUT = """\
full matrix; 3 rounds x 500 requests per app and shape
### sync, Redis (gunicorn sync, 2 workers, deploy/gunicorn.conf.py)
GET user     keel          1950–2050           250      334–396
SUMMARY {"measure": "CPU per request: other / Keel", "shape": "GET user", "worker": "sync", "redis": "yes", \
"keel": "2000 µs", "vs_bare": [0.4878, 0.5128], "vs_minimal": [1.2195, 1.4615], "vs_equivalent": [2.0975, 2.5384], \
"redis_cmds": 1.0, "goal": "≥ 0.65 / 2.0 / 3.0", "met": "no"}
SUMMARY {"measure": "p99 latency at 50 % capacity: Keel / bare", "shape": "GET user", "worker": "gevent", \
"redis": "yes", "keel": "12.4 ms", "vs_bare": [0.8671, 0.8671], "goal": "≤ 2", "met": "yes"}
SUMMARY {"measure": "start-up: create_app | shipped modules", "keel": "1313 ms"}
shapes: 412 s
"""


def rows(lines: list[str]) -> list[list[str]]:
    """The cells of each body row of a markdown table (``\\|`` is not a separator)."""
    out = []
    for line in lines[2:]:
        cells = line.replace("\\|", "\x00").strip().strip("|").split("|")
        out.append([c.strip().replace("\x00", "|") for c in cells])
    return out


def test_summary_rows_from_canned_lines() -> None:
    table, readable = summary_table([Outcome("shapes", "ok", SHAPES_OUTPUT, 412.0)])
    assert readable
    assert table[0].startswith("| measure | shape | worker | Redis | Keel | vs bare Flask | vs minimal peer |")
    assert table[1] == "|" + "---|" * (len(COLUMNS) + 1)
    body = rows(table)
    assert all(len(r) == len(COLUMNS) + 1 for r in body), body
    cpu, latency, startup = body
    assert cpu == [
        "CPU per request: other / Keel",
        "GET user",
        "sync",
        "yes",
        "2000 µs",
        "0.49–0.51",
        "1.22–1.46",
        "2.10–2.54",
        "1.00",
        "≥ 0.65 / 2.0 / 3.0",
        "no",
        "shapes",
    ]
    assert latency[5] == "0.87"  # a range whose ends read the same is one number
    assert startup[0] == "start-up: create_app | shipped modules"  # a pipe inside a cell is escaped
    assert startup[4] == "1313 ms" and startup[1:4] == ["", "", ""]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("SUMMARY {not json", "not JSON"),
        ('SUMMARY ["measure"]', "not an object with a measure"),
        ('SUMMARY {"keel": "1 ms"}', "not an object with a measure"),
        ('SUMMARY {"measure": "x", "vs_bear": [1, 2]}', "unknown key(s) vs_bear"),
        ('SUMMARY {"measure": "x", "vs_bare": [1, 2, 3]}', "unreadable value(s) of vs_bare"),
        ('SUMMARY {"measure": "x", "keel": {"a": 1}}', "unreadable value(s) of keel"),
    ],
)
def test_an_unreadable_line_shows_in_the_table(line: str, problem: str) -> None:
    records, problems, human = parse_summary(f"before\n{line}\nafter")
    assert records == [] and len(problems) == 1 and problems[0].startswith(problem), problems
    assert human == "before\nafter"
    table, readable = summary_table([Outcome("broken", "ok", line, 1.0)])
    assert not readable
    assert "**unreadable SUMMARY line**" in table[2] and table[2].endswith(" broken |")
    assert len(rows(table)[0]) == len(COLUMNS) + 1


def test_failed_benchmark_keeps_its_rows_and_says_so() -> None:
    out = 'SUMMARY {"measure": "boot", "keel": "300 ms"}\nTraceback (most recent call last):\n'
    table, readable = summary_table([Outcome("foundation", "failed (exit 1)", out, 3.0)])
    assert readable
    body = rows(table)
    assert body[0][0] == "boot" and body[1][0] == "**failed (exit 1)**"
    assert body[1][-1] == "foundation"


def test_results_start_with_the_summary_then_machine_then_details() -> None:
    outcomes = [
        Outcome("shapes", "ok", SHAPES_OUTPUT, 412.0),
        Outcome("ws_fanout", "timeout", "round 1\n(stopped after 150 s)", 150.0),
        Outcome("state_throughput", SKIPPED, "", 0.0),
    ]
    text, readable = results_markdown(outcomes, quick=True, when=WHEN, cpus=2)
    assert readable
    lines = text.splitlines()
    assert lines[0] == "# Keel benchmark results"
    first_table = next(i for i, line in enumerate(lines) if line.startswith("| measure |"))
    machine = next(i for i, line in enumerate(lines) if line.startswith("2026-12-02 03:04 UTC, 2 CPUs"))
    assert first_table < machine
    assert "quick run (`make bench QUICK=1`)" in lines[machine]
    assert "| shapes | ok | 412 |" in lines and "| ws_fanout | timeout | 150 |" in lines
    details = text[text.index("## shapes") :]
    assert "GET user     keel          1950–2050" in details and "SUMMARY" not in details
    assert "## ws_fanout" in details and "(stopped after 150 s)" in details
    assert "| state_throughput | skipped (full runs only) | 0 |" in lines and "## state_throughput" not in text
    assert "**timeout**" in text and "**skipped" not in text


def test_harness_lines_read_back() -> None:
    record = {"measure": "m", "worker": "gevent", "vs_bare": [0.5, 0.75], "redis_cmds": 1, "met": "mixed"}
    with redirect_stdout(io.StringIO()) as out:
        harness.summary(record)
    records, problems, human = parse_summary(out.getvalue())
    assert (records, problems, human) == ([record], [], "")
    assert json.loads(out.getvalue().removeprefix("SUMMARY ")) == record


def test_every_benchmark_is_a_script_and_quick_runs_fit_in_two_minutes() -> None:
    for bench in BENCHES:
        assert (HERE / f"{bench.name}.py").is_file(), bench.name
        assert (bench.quick is None) == (bench.quick_budget_s == 0), bench.name
    assert {"shapes", "ws_fanout"} <= {b.name for b in BENCHES if b.quick is not None}
    assert sum(b.quick_budget_s for b in BENCHES) <= 120  # each is stopped at its budget


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie waits for its reaper; it runs no more


def test_a_benchmark_over_its_budget_is_stopped_with_its_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "server.pid"
    (tmp_path / "slow.py").write_text(
        "import subprocess, sys, time\n"
        f"server = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(server.pid))\n"
        "print('round 1 done')\n"
        "time.sleep(60)\n"
    )
    monkeypatch.setattr(bench_main, "HERE", tmp_path)
    started = time.monotonic()
    outcome = bench_main.run(bench_main.Bench("slow", (), ("--quick",), 60, 2), quick=True)
    assert time.monotonic() - started < 20
    assert outcome.status == "timeout"
    assert "round 1 done" in outcome.output and "(stopped after 2 s)" in outcome.output
    server = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(server), "the benchmark's server outlived it"
