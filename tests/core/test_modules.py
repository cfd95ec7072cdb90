"""ModuleManager and BaseModule (SPEC §5): order, cycles, isolation, dispose, CLI."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from core.errors import ModuleError
from core.module import BaseModule, action
from tests.core.conftest import module_source


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "testmods"]


@pytest.fixture
def start(make_app: Any, module_dir: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Any:
    """``start({"a": source, ...}, **overrides)``: an app whose MODULES_DIR holds exactly those modules."""
    caplog.set_level(logging.INFO)

    def run(modules: dict[str, str], **overrides: Any) -> Any:
        directory = module_dir(modules)
        return make_app(MODULES_DIR=str(directory), ACTIONS_DIR=str(tmp_path / "actions"), **overrides)

    return run


def test_modules_start_in_dependency_order_and_stop_in_reverse(start: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = start(
        {
            "web": module_source("web", ("auth", "store")),
            "auth": module_source("auth", ("store",)),
            "store": module_source("store"),
            "alpha": module_source("alpha"),
        }
    )
    am = app.extensions["keel"]
    assert am.modules.order == ["alpha", "store", "auth", "web"]
    assert _events(caplog) == ["init alpha", "init store", "init auth", "init web"]
    assert app.test_client().get("/web/ping").get_json() == {"module": "web"}
    caplog.clear()
    am.dispose()
    assert _events(caplog) == ["dispose web", "dispose auth", "dispose store", "dispose alpha"]
    # managers are disposed in reverse creation order, modules (the last manager) first
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("disposing managers"))
    assert line == "disposing managers: " + ", ".join(reversed(list(am.managers)))
    assert line.startswith("disposing managers: modules,") and line.endswith(", services, hooks")


def test_module_started_hook_fires_per_module_in_order(start: Any) -> None:
    app = start({"b": module_source("b", ("a",)), "a": module_source("a")})
    am = app.extensions["keel"]
    assert [m["name"] for m in am.modules.info()] == ["a", "b"]
    assert all(m["state"] == "started" and m["version"] == "1.2.3" for m in am.modules.info())


def test_dependency_cycle_stops_the_start_spelling_out_the_cycle(start: Any) -> None:
    with pytest.raises(ModuleError, match=re.escape("module dependency cycle: a -> b -> a")):
        start({"a": module_source("a", ("b",)), "b": module_source("b", ("a",))})


def test_longer_cycle_is_spelled_out(start: Any) -> None:
    modules = {"a": module_source("a", ("c",)), "b": module_source("b", ("a",)), "c": module_source("c", ("b",))}
    with pytest.raises(ModuleError, match=re.escape("a -> c -> b -> a")):
        start(modules)


def test_missing_dependency_names_it(start: Any) -> None:
    with pytest.raises(ModuleError, match="module 'tasks' depends on 'auth', which is not available"):
        start({"tasks": module_source("tasks", ("auth",))})


def test_failing_module_is_isolated(start: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = start(
        {
            "broken": module_source("broken", fail=True),
            "child": module_source("child", ("broken",)),
            "grandchild": module_source("grandchild", ("child",)),
            "fine": module_source("fine"),
        }
    )
    am = app.extensions["keel"]
    states = {m["name"]: m["state"] for m in am.modules.info()}
    assert states == {"broken": "failed", "child": "skipped", "grandchild": "skipped", "fine": "started"}
    assert "init child" not in _events(caplog)
    # logged with its traceback
    failure = next(r for r in caplog.records if "module broken initialize failed" in r.getMessage())
    assert failure.levelno == logging.ERROR and failure.exc_info is not None
    client = app.test_client()
    assert client.get("/fine/ping").status_code == 200
    for name in ("broken", "child"):
        response = client.get(f"/{name}/ping")
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "service_unavailable"
        assert response.headers["Retry-After"]
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded"
    assert body["modules"]["broken"]["state"] == "failed"
    assert "RuntimeError: boom in broken" in body["modules"]["broken"]["error"]
    assert body["modules"]["fine"] == {"status": "healthy", "state": "started"}
    # dispose only reaches the modules that started
    caplog.clear()
    am.dispose()
    assert _events(caplog) == ["dispose fine"]


def test_degraded_module_health_degrades_the_app(start: Any) -> None:
    app = start({"slow": module_source("slow", health="degraded")})
    assert app.test_client().get("/health").get_json()["status"] == "degraded"


def test_required_module_failure_stops_the_start(start: Any) -> None:
    with pytest.raises(ModuleError, match="required module 'core_db' initialize failed: RuntimeError: boom"):
        start({"core_db": module_source("core_db", fail=True, required=True)})


def test_required_module_whose_dependency_failed_stops_the_start(start: Any) -> None:
    modules = {"a": module_source("a", fail=True), "b": module_source("b", ("a",), required=True)}
    with pytest.raises(ModuleError, match="required module 'b' not started: dependency a is not running"):
        start(modules)


def test_modules_disabled(start: Any) -> None:
    app = start({"a": module_source("a"), "b": module_source("b")}, MODULES_DISABLED="b")
    am = app.extensions["keel"]
    assert [m["name"] for m in am.modules.info()] == ["a"]
    assert app.test_client().get("/b/ping").status_code == 404
    output = app.test_cli_runner().invoke(args=["modules", "list"]).output
    assert re.search(r"^b\s+-\s+disabled", output, re.M)


def test_disabling_a_dependency_is_a_missing_dependency(start: Any) -> None:
    with pytest.raises(ModuleError, match="depends on 'a', which is not available"):
        start({"a": module_source("a"), "b": module_source("b", ("a",))}, MODULES_DISABLED=["a"])


def test_flask_modules_list(start: Any) -> None:
    app = start({"a": module_source("a"), "b": module_source("b", ("a",)), "c": module_source("c", fail=True)})
    result = app.test_cli_runner().invoke(args=["modules", "list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert re.match(r"a\s+1\.2\.3\s+started\s+deps=-", lines[0])
    assert re.match(r"b\s+1\.2\.3\s+started\s+deps=a", lines[1])
    assert re.match(r"c\s+1\.2\.3\s+failed\s+deps=-\s+\(initialize failed: RuntimeError: boom in c\)", lines[2])


def _failed(app: Any, name: str) -> str:
    (info,) = [m for m in app.extensions["keel"].modules.info() if m["name"] == name]
    assert info["state"] == "failed"
    return str(info["error"])


def test_a_module_file_must_define_exactly_one_module(start: Any) -> None:
    app = start({"empty": "X = 1\n"})
    assert re.search(r"empty/__init__.py must define exactly one BaseModule subclass, found 0", _failed(app, "empty"))


def test_import_error_names_the_module_file_and_line(start: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = start({"bad": "import os\nimport no_such_package\n"})
    assert re.search(r"bad/__init__.py:2: ModuleNotFoundError: No module named 'no_such_package'$", _failed(app, "bad"))
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("module bad failed to load")]
    assert logged.levelname == "ERROR" and logged.exc_info and logged.exc_info[0] is ModuleNotFoundError  # traceback


def test_action_signature_is_checked_when_the_module_loads(start: Any) -> None:
    source = module_source("acts") + "\n    @action\n    def run(self, params):\n        return 1\n"
    source = source.replace("from core import BaseModule", "from core import BaseModule, action")
    app = start({"acts": source})
    assert "@action Module.run must have the signature (self, params, ctx)" in _failed(app, "acts")


def test_action_marker() -> None:
    class Tasks(BaseModule):
        @action
        def create(self, params: dict[str, Any], ctx: Any) -> int:
            return 1

        def helper(self, params: dict[str, Any], ctx: Any) -> int:
            return 2

    assert set(Tasks.action_handlers()) == {"create"}
    with pytest.raises(ModuleError, match=r"has \(self, a, b, c\)"):

        @action
        def bad(self: Any, a: Any, b: Any, c: Any) -> None: ...


def test_module_without_initialize_fails_isolated(start: Any) -> None:
    source = "from core import BaseModule\n\nclass Lazy(BaseModule):\n    pass\n"
    app = start({"lazy": source})
    info = app.extensions["keel"].modules.info()[0]
    assert info["state"] == "failed"
    assert "must implement initialize" in info["error"]
