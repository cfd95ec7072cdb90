"""Loading and reloading at scale (issue 3).

    .venv/bin/python bench/actions_load.py [--reloads 1000] [--gunicorn-seconds 20]

1. Boot: ``create_app()`` with 1,000 actions in 50 files (20 actions of 4 parameters each per
   file) vs the same app with one file, so the difference is the actions' share; also the
   actions manager's own load time.
2. Reload of one changed file among the 50 (median and max of 50 reloads).
3. ``--reloads`` reloads while two threads call an action of the changing file without pause:
   every response must be 200 with a consistent version.
4. Under gunicorn (2 sync workers, ACTIONS_RELOAD_INTERVAL=0.02 s, each worker's own reload
   thread): the file is rewritten every 40 ms while wrk loads an action of that file; wrk's
   non-2xx/socket errors must be 0; reloads are counted from the workers' audit log lines.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actions_common import keel_env, make_project, start_gunicorn, wrk
from flask import Flask
from harness import summary

FILES, PER_FILE = 50, 20


def action_file(i: int, variant: int = 0) -> str:
    lines = ["version: 1", "module: benchmod", "actions:"]
    for j in range(PER_FILE):
        lines += [
            f"  act_{i}_{j}:",
            "    handler: trivial",
            f"    description: Action {j} of file {i} (variant {variant}).",
            "    methods: [GET, POST]",
            "    auth: public",
            "    params:",
            f"      n: {{type: integer, minimum: 0, maximum: {1000 + variant}, default: {variant}}}",
            '      s: {type: string, maxLength: 64, pattern: "^[a-z]*$"}',
            "      tags: {type: array, items: {type: string, maxLength: 8}, maxItems: 5}",
            "      flag: {type: boolean, default: false}",
        ]
    return "\n".join(lines) + "\n"


def build(root: Path, files: int) -> Any:
    from core import create_app

    env = keel_env(root, RATE_LIMIT_IP="100000000/minute")
    settings = {k: env[k] for k in ("ACTIONS_DIR", "MODULES_DIR", "SECRETS_DIR", "DATABASE_URL", "RATE_LIMIT_IP")}
    settings.update(APP_ENV="test", LOG_LEVEL="WARNING", ACTIONS_RELOAD_INTERVAL=0)
    return create_app(settings, env={})


def write(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reloads", type=int, default=1000)
    parser.add_argument("--gunicorn-seconds", type=float, default=20)
    parser.add_argument("--boots", type=int, default=3, help="boots of each app (min–max reported)")
    parser.add_argument("--samples", type=int, default=100, help="timed reloads of one changed file")
    args = parser.parse_args()

    root = make_project({f"f{i:02d}.yaml": action_file(i) for i in range(FILES)})
    small = make_project({"f00.yaml": action_file(0)})

    # 1. boot
    build(small, 1).extensions["keel"].dispose()  # imports and first-app costs, not measured
    boots, small_boots, loads = [], [], []
    for _ in range(args.boots):
        t = time.perf_counter()
        app = build(root, FILES)
        boots.append(time.perf_counter() - t)
        am = app.extensions["keel"]
        assert am.actions.count() == FILES * PER_FILE and not am.actions.status()["errors"], am.actions.status()[
            "errors"
        ]
        am.dispose()
        t = time.perf_counter()
        small_app = build(small, 1)
        small_boots.append(time.perf_counter() - t)
        small_app.extensions["keel"].dispose()
    app = build(root, FILES)
    am = app.extensions["keel"]
    manager_cls = type(am.actions)
    for _ in range(args.boots):
        fresh = manager_cls()
        fresh.init_app(Flask("bench-load"), am)  # a throw-away app: the served one keeps its manager
        t = time.perf_counter()
        fresh._sync(initial=True)
        loads.append(time.perf_counter() - t)
    summary(
        {
            "measure": f"boot: create_app with {FILES * PER_FILE} actions in {FILES} files (in process)",
            "keel": f"{min(boots) * 1e3:.0f}–{max(boots) * 1e3:.0f} ms",
        }
    )
    print(
        f"boot, create_app with {FILES * PER_FILE} actions in {FILES} files: {min(boots) * 1e3:.0f} ms "
        f"(with {PER_FILE} actions in 1 file: {min(small_boots) * 1e3:.0f} ms); "
        f"actions load alone: {min(loads) * 1e3:.0f} ms"
    )

    # 2. one changed file (then again with the boot heap frozen out of the GC's full passes)
    target = Path(am.settings["ACTIONS_DIR"]) / "f07.yaml"
    for label in ("", " (gc.freeze() after boot)"):
        if label:
            gc.freeze()
        times = []
        for k in range(args.samples):
            write(target, action_file(7, variant=k + 1))
            t = time.perf_counter()
            changed = am.actions.reload()
            times.append(time.perf_counter() - t)
            assert changed["changed"] == [str(target)], changed
        times.sort()
        p95 = times[int(len(times) * 0.95)]
        summary(
            {
                "measure": f"reload of 1 changed file among {FILES}{label}",
                "keel": f"median {statistics.median(times) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms",
            }
        )
        print(
            f"reload of 1 changed file among {FILES}{label}: median {statistics.median(times) * 1e3:.1f} ms, "
            f"p95 {p95 * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms"
        )
    gc.unfreeze()

    # 3. reloads under load, in process
    stop = threading.Event()
    results: list[tuple[int, int]] = []

    def hammer() -> None:
        client = app.test_client()
        while not stop.is_set():
            r = client.get("/actions/act_7_3?s=abc")
            results.append((r.status_code, (r.get_json() or {}).get("result", {}).get("n", -1)))

    write(target, action_file(7, variant=2))  # variants 1 and 2 only from here (n's default)
    am.actions.reload()
    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for th in threads:
        th.start()
    t = time.perf_counter()
    try:
        for k in range(args.reloads):
            write(target, action_file(7, variant=k % 2 + 1))
            am.actions.reload()
    finally:
        stop.set()
        for th in threads:
            th.join()
    elapsed = time.perf_counter() - t
    failed = sum(1 for status, _ in results if status != 200)
    odd = sum(1 for _, n in results if n not in (1, 2))
    print(
        f"{args.reloads} reloads under load in {elapsed:.1f} s: {len(results)} requests, {failed} failed, "
        f"{odd} with an unexpected version"
    )
    am.dispose()

    # 4. gunicorn: every worker's reload thread, file rewritten every 40 ms under wrk
    if args.gunicorn_seconds > 0:
        server = start_gunicorn(root, "keel", ACTIONS_RELOAD_INTERVAL="0.02", LOG_LEVEL="INFO")
        stop.clear()
        writes = 0

        def editor() -> None:
            nonlocal writes
            k = 0
            while not stop.is_set():
                k += 1
                write(target, action_file(7, variant=k % 2 + 1))
                writes += 1
                time.sleep(0.04)

        ed = threading.Thread(target=editor)
        ed.start()
        try:
            res = wrk(f"http://127.0.0.1:{server.port}/actions/act_7_3?s=abc", args.gunicorn_seconds)
        finally:
            stop.set()
            ed.join()
            server.stop()
        assert server.log is not None
        reloads = len(re.findall(r"actions reloaded", server.log.read_text(errors="replace")))
        summary(
            {
                "measure": "hot reloads under load (gunicorn, file rewritten every 40 ms): failed requests",
                "keel": f"{res.non_2xx + res.errors} of {res.requests}, {reloads} reloads",
                "goal": "0",
                "met": "yes" if res.non_2xx + res.errors == 0 else "no",
            }
        )
        print(
            f"gunicorn 2 workers, {args.gunicorn_seconds:.0f} s: {writes} file writes, {reloads} reloads across "
            f"workers, {res.requests} requests ({res.rps:.0f}/s), non-2xx {res.non_2xx}, socket errors {res.errors}"
        )
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(small, ignore_errors=True)


if __name__ == "__main__":
    main()
