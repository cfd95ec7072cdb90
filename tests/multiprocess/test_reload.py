"""SPEC §4.3: a saved action file reaches every worker of every instance; a broken save keeps
the last good version everywhere (``/health`` degraded on each instance) until it is fixed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.multiprocess.conftest import RELOAD_YAML, Cluster, Instance

pytestmark = pytest.mark.slow  # real gunicorn processes (started once per session)

IP = "192.0.2.10"
DEADLINE_S = 2.0  # ACTIONS_RELOAD_INTERVAL is 0.2 s


def _status(cluster: Cluster, inst: Instance, name: str = "reload.yaml") -> tuple[float, dict[str, Any] | None]:
    """(the answering worker's fingerprint, its record of the file ``name``, None if it has
    none). The fingerprint is the load time of a file that never changes: each worker loaded
    it itself at boot."""
    resp = inst.request("GET", "/actions/actions_status", token=cluster.admin_token, ip=IP)
    assert resp.status_code == 200, resp.text
    files = resp.json()["result"]["files"]
    worker = next(f["loaded_at"] for f in files if f["path"].endswith("modules/admin/actions.yaml"))
    record = next((f for f in files if f["path"].endswith("/" + name)), None)
    return worker, record


def _until_every_worker(cluster: Cluster, done: Callable[[Any], bool], name: str = "reload.yaml") -> float:
    """Poll both instances with fresh connections until each of their workers has answered with
    a record for which ``done`` holds; once a worker has, it must never answer otherwise. Returns
    the seconds it took; fails after DEADLINE_S."""
    start = time.monotonic()
    seen: dict[str, set[float]] = {inst.name: set() for inst in cluster.instances}
    expected = {inst.name: len(inst.workers()) for inst in cluster.instances}
    assert all(n == 2 for n in expected.values()), expected
    while True:
        for inst in cluster.instances:
            worker, record = _status(cluster, inst, name)
            if done(record):
                seen[inst.name].add(worker)
            else:
                assert worker not in seen[inst.name], f"worker of {inst.name} went back: {record}"
        elapsed = time.monotonic() - start
        if all(len(seen[name]) == expected[name] for name in seen):
            return elapsed
        assert elapsed < DEADLINE_S, f"not every worker got there within {DEADLINE_S}s: {seen}"


def _every_answer(cluster: Cluster, path: str, check: Callable[[Any], None], *, times: int = 10,
                  token: str | None = None) -> None:
    for inst in cluster.instances:
        for _ in range(times):
            check(inst.request("GET", path, token=token, ip=IP))


def _listing(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    items = body.get("actions", body.get("result", body))
    if isinstance(items, dict):
        items = [{"name": k, **v} for k, v in items.items()]
    return {a["name"]: a for a in items}


def test_a_new_file_and_its_removal_reach_every_worker_of_every_instance(cluster: Cluster) -> None:
    path = cluster.actions_dir / "fresh.yaml"
    path.write_text(RELOAD_YAML.format(description="fresh", extra="").replace("mp_info:", "mp_fresh:"))
    _until_every_worker(cluster, lambda rec: rec is not None and rec["actions"] == ["mp_fresh"], "fresh.yaml")
    _every_answer(cluster, "/actions/mp_fresh", lambda r: _assert_status(r, 200))
    path.unlink()
    _until_every_worker(cluster, lambda rec: rec is None, "fresh.yaml")
    _every_answer(cluster, "/actions/mp_fresh", lambda r: _assert_status(r, 404))


def test_edit_break_and_fix_reach_every_worker_of_every_instance(cluster: Cluster) -> None:
    path = cluster.actions_dir / "reload.yaml"
    _every_answer(cluster, "/health", lambda r: _assert_health(r, "healthy"))

    # 1. an edit in place: a new description and a new action
    path.write_text(RELOAD_YAML.format(description="version two", extra=_extra("mp_added")))
    took = _until_every_worker(cluster, lambda rec: "mp_added" in rec["actions"] and not rec["errors"])

    def new_listing(resp: Any) -> None:
        listing = _listing(resp)
        assert listing["mp_info"]["description"] == "version two"
        assert "mp_added" in listing

    _every_answer(cluster, "/actions", new_listing)
    _every_answer(cluster, "/actions/mp_added", lambda r: _assert_status(r, 200))

    # 2. a broken save: every worker keeps serving version two, /health degraded everywhere
    path.write_text("version: 1\nmodule: system\nactions:\n  mp_info: {handler: info, auth: publik\n")
    _until_every_worker(
        cluster, lambda rec: bool(rec["errors"]) and rec["serving"] == "last good version"
        and "mp_added" in rec["actions"],
    )
    _every_answer(cluster, "/health", lambda r: _assert_health(r, "degraded"))
    _every_answer(cluster, "/actions", new_listing)
    _every_answer(cluster, "/actions/mp_added", lambda r: _assert_status(r, 200))

    # 3. the fix, written the way editors do (temp file + rename): every worker recovers
    tmp = path.with_suffix(".tmp~")
    tmp.write_text(RELOAD_YAML.format(description="version three", extra=""))
    os.replace(tmp, path)
    _until_every_worker(cluster, lambda rec: rec["actions"] == ["mp_info"] and not rec["errors"])
    _every_answer(cluster, "/health", lambda r: _assert_health(r, "healthy"))

    def fixed_listing(resp: Any) -> None:
        listing = _listing(resp)
        assert listing["mp_info"]["description"] == "version three"
        assert "mp_added" not in listing

    _every_answer(cluster, "/actions", fixed_listing)
    _every_answer(cluster, "/actions/mp_added", lambda r: _assert_status(r, 404))
    assert took < DEADLINE_S


def _extra(name: str) -> str:
    return f"  {name}:\n    handler: info\n    description: Added while running.\n    methods: [GET]\n" \
        "    auth: public\n"


def _assert_status(resp: Any, status: int) -> None:
    assert resp.status_code == status, resp.text


def _assert_health(resp: Any, status: str) -> None:
    body = resp.json()
    assert body["status"] == status, body
    if status == "degraded":
        assert body["managers"]["actions"]["status"] == "degraded", body["managers"]["actions"]
