"""Hardening (issue 12) item 18: a module that cannot be imported does not stop the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.errors import ModuleError
from tests.core.conftest import module_source

BROKEN = "from core import BaseModule\n\nclass Broken(BaseModule)\n    name = 'broken'\n"
BROKEN_REQUIRED = (
    "from core import BaseModule\n\nclass Core(BaseModule):\n    required = True\n"
    "    def initialize(self, am)\n        pass\n"
)


def _write(root: Path, modules: dict[str, str]) -> Path:
    for name, source in modules.items():
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(source)
    return root


def test_item_18_a_module_with_a_syntax_error_fails_alone(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mods = _write(
        tmp_path / "mods",
        {"broken": BROKEN, "needs": module_source("needs", ("broken",)), "fine": module_source("fine")},
    )
    monkeypatch.chdir(tmp_path)  # errors name the file as an editor shows it: relative to the project
    app = make_app(MODULES_DIR=str(mods), ACTIONS_DIR=str(tmp_path / "actions"))
    modules = {m["name"]: m for m in app.extensions["keel"].modules.info()}
    assert modules["broken"]["state"] == "failed"
    assert modules["broken"]["error"] == "mods/broken/__init__.py:3:25: SyntaxError: expected ':'"
    assert modules["needs"]["state"] == "skipped" and modules["fine"]["state"] == "started"
    client = app.test_client()
    assert client.get("/fine/ping").status_code == 200  # the app serves
    for path in ("/broken/", "/broken/anything"):  # the failed module's URLs answer 503, not 404
        response = client.get(path)
        assert response.status_code == 503 and response.json["error"]["code"] == "service_unavailable"
    health = client.get("/health").json
    assert health["status"] == "degraded" and health["modules"]["broken"]["state"] == "failed"


def test_item_18_a_required_module_that_cannot_load_stops_the_start(make_app: Any, tmp_path: Path) -> None:
    mods = _write(tmp_path / "mods", {"core_mod": BROKEN_REQUIRED})
    with pytest.raises(ModuleError, match=r"required module 'core_mod' could not be loaded: .*SyntaxError"):
        make_app(MODULES_DIR=str(mods), ACTIONS_DIR=str(tmp_path / "actions"))
