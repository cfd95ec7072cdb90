"""create_app and the AppManager (SPEC §5, DESIGN habits 1-3): one per app, nothing shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import core
from core.app_manager import AppManager
from core.errors import KeelError, ModuleError, SetupError
from tests.core.conftest import module_source


def test_two_apps_share_no_state(make_app: Any) -> None:
    app1, app2 = make_app(PORT=1111), make_app(PORT=2222)
    am1, am2 = app1.extensions["keel"], app2.extensions["keel"]
    assert am1 is not am2
    assert (am1.settings["PORT"], am2.settings["PORT"]) == (1111, 2222)
    for attr in am1.managers:
        assert am1.managers[attr] is not am2.managers[attr], attr
        assert app1.extensions[f"keel.{am1.managers[attr].name}"] is am1.managers[attr]
    am1.hooks.register("custom_event", lambda **_: "one")
    am1.services.register("mailer", object())
    assert am1.hooks.trigger("custom_event") == ["one"]
    assert am2.hooks.trigger("custom_event") == []
    assert "mailer" in am1.services and "mailer" not in am2.services
    assert am1.modules.get("system") is not am2.modules.get("system")
    # the proxy finds the current app's manager
    with app1.app_context():
        assert core.app_manager.settings["PORT"] == 1111
    with app2.app_context():
        assert core.app_manager.settings["PORT"] == 2222


def test_no_class_level_singletons(make_app: Any) -> None:
    app = make_app()
    am = app.extensions["keel"]
    for cls in [AppManager, *(type(m) for m in am.managers.values())]:
        for klass in cls.__mro__:
            for name, value in vars(klass).items():
                assert not isinstance(value, AppManager | Flask), f"{klass.__name__}.{name}"
                assert not any(value is m for m in am.managers.values()), f"{klass.__name__}.{name}"


def test_managers_are_created_in_dependency_order(am: Any) -> None:
    order = list(am.managers)
    assert order[:2] == ["hooks", "services"] and order[-1] == "modules"
    for before, after in [("vault", "redis"), ("redis", "db")]:
        if before in order and after in order:
            assert order.index(before) < order.index(after)


def test_app_started_and_app_stopping_hooks(make_app: Any, module_dir: Any, tmp_path: Path) -> None:
    source = module_source("watcher").replace(
        'log.info("init watcher")',
        'app_manager.hooks.register("app_started", lambda **d: self.seen.append("started"))\n'
        '        app_manager.hooks.register("app_stopping", lambda **d: self.seen.append("stopping"))\n'
        "        self.seen = []",
    )
    app = make_app(MODULES_DIR=str(module_dir({"watcher": source})), ACTIONS_DIR=str(tmp_path / "actions"))
    am = app.extensions["keel"]
    module = am.modules.get("watcher")
    assert module.seen == ["started"]
    am.dispose()
    am.dispose()  # idempotent
    assert module.seen == ["started", "stopping"]


def test_failed_start_disposes_what_was_built(make_app: Any, module_dir: Any, tmp_path: Path, caplog: Any) -> None:
    import logging

    caplog.set_level(logging.INFO)
    with pytest.raises(ModuleError):
        make_app(MODULES_DIR=str(module_dir({"x": module_source("x", ("missing",))})),
                 ACTIONS_DIR=str(tmp_path / "actions"))
    # the managers declared before the modules failed are disposed, in reverse order
    assert any(r.getMessage().startswith("disposing managers: actions, websocket, limiter") for r in caplog.records)


def test_errors_share_one_root() -> None:
    from core import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), KeelError)


def test_registration_is_frozen_after_the_first_request(app: Any, client: Any) -> None:
    """DESIGN habit 3: services, state machines and routes are registered while the app is
    built; afterwards a registration raises a clear error instead of half-applying."""
    am = app.extensions["keel"]
    am.services.register("before", object())  # allowed while building
    assert client.get("/healthz").status_code == 200
    with pytest.raises(SetupError, match=r"services.register\('mailer'\) can no longer be called"):
        am.services.register("mailer", object())
    assert "mailer" not in am.services
    with pytest.raises(SetupError, match=r"state.define\('late'\) can no longer be called"):
        am.state.define("late", {"a": []}, initial="a")
    tasks = am.modules.get("tasks")
    graph = {"todo": ["doing"], "doing": ["todo", "done"], "done": []}
    assert am.state.define("task", graph, initial="todo") is tasks.machine  # the same graph again: a no-op
    with pytest.raises(AssertionError, match="can no longer be called"):
        app.add_url_rule("/late", "late", lambda: "late")
