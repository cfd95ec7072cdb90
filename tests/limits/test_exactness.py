"""Exactness under real concurrency: 8 OS processes hammer one key on the real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.limits.conftest import ACTIONS_YAML

WORKER = Path(__file__).with_name("exact_worker.py")


def run_workers(
    tmp_path: Path, settings: dict[str, Any], processes: int, requests: int, repeats: int, timeout: float = 120
) -> list[Any]:
    actions = tmp_path / "exact_actions"
    actions.mkdir(exist_ok=True)
    (actions / "t.yaml").write_text(ACTIONS_YAML.format(limit="1000/minute"))
    started = time.monotonic()
    procs = []
    for i in range(processes):
        (tmp_path / f"secrets{i}").mkdir(exist_ok=True)
        config = {
            "APP_ENV": "test",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": f"sqlite:///{tmp_path / f'worker{i}.db'}",
            "SECRETS_DIR": str(tmp_path / f"secrets{i}"),
            "ACTIONS_DIR": str(actions),
            "ACTIONS_RELOAD_INTERVAL": 0,
            "BAN_AFTER_VIOLATIONS": 10**9,
            "repeats": repeats,
            "requests": requests,
            "path": "/actions/t_public",
            **settings,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # release them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        released = time.monotonic()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"startup {released - started:.1f}s, requests {time.monotonic() - released:.1f}s")
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_eight_processes_admit_exactly_the_limit(tmp_path: Path, redis_config: dict[str, Any]) -> None:
    started = time.monotonic()
    repeats, per_process = 5, 80  # 640 calls per repeat on a 100 limit; the 20-repeat run is bench/
    results = run_workers(tmp_path, {"RATE_LIMIT_IP": "100/minute", **redis_config}, 8, per_process, repeats)
    totals = [sum(r["admitted"][i] for r in results) for i in range(repeats)]
    assert totals == [100] * repeats
    statuses: dict[str, int] = {}
    for r in results:
        for status, count in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    assert statuses == {"200": 100 * repeats, "429": (8 * per_process - 100) * repeats}
    print(f"8 processes x {per_process} x {repeats}: admitted {totals} in {time.monotonic() - started:.1f}s")
