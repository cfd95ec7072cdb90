"""SPEC §4.3: hot reload in the running app — every editor save pattern and a Kubernetes
ConfigMap swap cause exactly one reload; a bad file keeps the last good version serving."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import GOOD_DEMO, wait_for, write

INTERVAL = 0.05
V2 = GOOD_DEMO + "  added:\n    handler: echo\n    auth: public\n"


class Recorder:
    def __init__(self, app: Any) -> None:
        self.reloaded: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        hooks = app.extensions["keel"].hooks
        hooks.register("actions_reloaded", lambda **d: self.reloaded.append(d))
        hooks.register("actions_reload_failed", lambda **d: self.failed.append(d))


@pytest.fixture
def live(actions_app: Any) -> tuple[Any, Recorder]:
    app = actions_app(ACTIONS_RELOAD_INTERVAL=INTERVAL)
    return app, Recorder(app)


def served(app: Any, name: str) -> bool:
    return bool(app.extensions["keel"].actions.get(name) is not None)


def settle_polls() -> None:
    time.sleep(INTERVAL * 8)


def test_reload_thread_runs_only_when_enabled(actions_app: Any) -> None:
    assert actions_app().extensions["keel"].actions.status()["watching"] is False


def test_write_in_place_is_one_reload(live: tuple[Any, Recorder], actions_dir: Path) -> None:
    app, rec = live
    assert app.extensions["keel"].actions.status()["watching"] is True
    with open(actions_dir / "demo.yaml", "w") as fh:  # truncate + write, as most editors do
        fh.write(V2)
    wait_for(lambda: served(app, "added"))
    settle_polls()
    assert len(rec.reloaded) == 1 and rec.failed == []
    assert rec.reloaded[0]["files"] == [str(actions_dir / "demo.yaml")]
    assert app.test_client().get("/actions/added").status_code == 200


def test_truncated_file_is_not_read_before_it_is_written(live: tuple[Any, Recorder], actions_dir: Path) -> None:
    app, rec = live
    with open(actions_dir / "demo.yaml", "w") as fh:  # truncated now...
        fh.flush()
        time.sleep(INTERVAL * 6)  # ...while the watcher polls several times...
        fh.write(V2)  # ...and written only then
    wait_for(lambda: served(app, "added"))
    settle_polls()
    assert len(rec.reloaded) == 1 and rec.failed == []


def test_write_temp_then_rename_is_one_reload(live: tuple[Any, Recorder], actions_dir: Path) -> None:
    app, rec = live
    tmp = actions_dir / ".demo.yaml.swp"
    tmp.write_text(V2)
    os.replace(tmp, actions_dir / "demo.yaml")
    wait_for(lambda: served(app, "added"))
    settle_polls()
    assert len(rec.reloaded) == 1 and rec.failed == []


def test_delete_then_create_is_one_reload(live: tuple[Any, Recorder], actions_dir: Path) -> None:
    app, rec = live
    path = actions_dir / "demo.yaml"
    path.unlink()
    path.write_text(V2)
    wait_for(lambda: served(app, "added"))
    settle_polls()
    assert len(rec.reloaded) == 1 and rec.failed == []
    assert served(app, "echo")


def test_kubernetes_configmap_symlink_swap_is_one_reload(actions_app: Any, actions_dir: Path) -> None:
    # The layout the kubelet writes: versioned hidden dir, ..data -> it, file -> ..data/file.
    (actions_dir / "..2025_01_01_00_00_00.1").mkdir()
    (actions_dir / "..2025_01_01_00_00_00.1" / "demo.yaml").write_text(GOOD_DEMO)
    os.symlink("..2025_01_01_00_00_00.1", actions_dir / "..data")
    os.symlink("..data/demo.yaml", actions_dir / "demo.yaml")
    app = actions_app(files={}, ACTIONS_RELOAD_INTERVAL=INTERVAL)
    rec = Recorder(app)
    assert served(app, "echo") and app.extensions["keel"].actions.status()["errors"] == []
    # The update: a new versioned dir, ..data_tmp -> it, renamed over ..data, old dir removed.
    (actions_dir / "..2025_01_02_00_00_00.2").mkdir()
    (actions_dir / "..2025_01_02_00_00_00.2" / "demo.yaml").write_text(V2)
    os.symlink("..2025_01_02_00_00_00.2", actions_dir / "..data_tmp")
    os.rename(actions_dir / "..data_tmp", actions_dir / "..data")
    shutil.rmtree(actions_dir / "..2025_01_01_00_00_00.1")
    wait_for(lambda: served(app, "added"))
    settle_polls()
    assert len(rec.reloaded) == 1 and rec.failed == []


def test_bad_save_keeps_last_good_then_fix_recovers(live: tuple[Any, Recorder], actions_dir: Path) -> None:
    app, rec = live
    am = app.extensions["keel"]
    client = app.test_client()
    with open(actions_dir / "demo.yaml", "w") as fh:
        fh.write(GOOD_DEMO.replace("type: integer, minimum: 1", "type: int, minimum: 1"))
    wait_for(lambda: rec.failed)
    settle_polls()
    assert len(rec.failed) == 1 and rec.reloaded == []
    assert rec.failed[0]["errors"] == [
        f"{actions_dir / 'demo.yaml'}:10:24: params.priority.type: 'int' is not one of string, "
        "integer, number, boolean, array, object (did you mean 'integer'?)"
    ]
    assert client.get("/actions/echo?title=x&priority=2").status_code == 200
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert health["managers"]["actions"]["status"] == "degraded"
    assert health["managers"]["actions"]["reload_errors_total"] == 1
    status = am.actions.status()
    assert status["errors"] == rec.failed[0]["errors"]
    by_path = {f["path"]: f for f in status["files"]}
    assert by_path[str(actions_dir / "demo.yaml")]["serving"] == "last good version"
    # Fixed: served again, healthy again, the counter keeps its history.
    write(actions_dir / "demo.yaml", V2)
    wait_for(lambda: served(app, "added"))
    assert am.actions.health()["status"] == "healthy"
    assert am.actions.status()["reload_errors_total"] == 1
    assert am.actions.status()["last_reload"] is not None


def test_added_and_removed_files(live: tuple[Any, Recorder], actions_dir: Path) -> None:
    app, rec = live
    write(
        actions_dir / "extra.yml", "version: 1\nmodule: demo\nactions:\n  extra:\n    handler: echo\n    auth: public\n"
    )
    wait_for(lambda: served(app, "extra"))
    (actions_dir / "extra.yml").unlink()
    wait_for(lambda: not served(app, "extra"))
    assert app.test_client().get("/actions/extra").status_code == 404
    assert [r["removed"] for r in rec.reloaded] == [[], [str(actions_dir / "extra.yml")]]


def test_one_level_of_subfolders(live: tuple[Any, Recorder], actions_dir: Path) -> None:
    app, _ = live
    (actions_dir / "team" / "deeper").mkdir(parents=True)
    write(actions_dir / "team" / "t.yaml", "version: 1\nmodule: demo\nactions:\n  team_a:\n    handler: echo\n")
    write(
        actions_dir / "team" / "deeper" / "d.yaml", "version: 1\nmodule: demo\nactions:\n  deep_a:\n    handler: echo\n"
    )
    wait_for(lambda: served(app, "team_a"))
    settle_polls()
    assert not served(app, "deep_a")


def test_requests_during_reloads_never_fail_nor_mix_versions(actions_app: Any, actions_dir: Path) -> None:
    """Two versions differ in two defaults; a response always has both from the same one."""
    app = actions_app(RATE_LIMIT_IP="1000000/minute")
    am = app.extensions["keel"]
    version_a = GOOD_DEMO.replace("default: 3}", "default: 1}").replace(
        "maxItems: 3, default: []", "maxItems: 3, default: [a]"
    )
    version_b = GOOD_DEMO.replace("default: 3}", "default: 2}").replace(
        "maxItems: 3, default: []", "maxItems: 3, default: [b]"
    )
    stop = threading.Event()
    seen: list[tuple[int, Any]] = []

    def hammer() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.get("/actions/echo?title=t")
            result = response.get_json().get("result") or {}
            params = result.get("params", {})
            seen.append((response.status_code, (params.get("priority"), tuple(params.get("tags", ())))))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for i in range(100):
            write(actions_dir / "demo.yaml", version_a if i % 2 else version_b)
            am.actions.reload()
    finally:
        stop.set()
        thread.join()
    assert am.actions.status()["reloads_total"] == 100
    assert seen and {s for s, _ in seen} == {200}
    assert {v for _, v in seen} <= {(1, ("a",)), (2, ("b",)), (3, ())}


def test_dispose_stops_the_reload_thread(actions_app: Any) -> None:
    app = actions_app(ACTIONS_RELOAD_INTERVAL=INTERVAL)
    manager = app.extensions["keel"].actions
    thread = manager._thread
    assert thread is not None and thread.is_alive()
    app.extensions["keel"].dispose()
    assert not thread.is_alive()
    assert manager.status()["watching"] is False
