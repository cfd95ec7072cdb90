"""The README's module walkthrough works as written (a module author follows these steps)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def readme_module_code() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- section:modules -->", 1)[1].split("<!-- /section:modules -->", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    (code,) = [b for b in blocks if b.startswith("# modules/hello/__init__.py\n")]
    return code


def test_readme_minimal_module_walkthrough(make_app: Any, tmp_path: Path) -> None:
    modules = tmp_path / "mods"
    (modules / "hello").mkdir(parents=True)
    (modules / "hello" / "__init__.py").write_text(readme_module_code())
    app = make_app(MODULES_DIR=str(modules), ACTIONS_DIR=str(tmp_path / "actions"))
    am = app.extensions["keel"]

    listing = app.test_cli_runner().invoke(args=["modules", "list"]).output
    assert re.search(r"^hello\s+1\.0\.0\s+started\s+deps=-$", listing, re.M), listing

    client = app.test_client()
    assert client.get("/hello/greet/Ada").get_json() == {"greeting": "Hello, Ada!", "count": 1}
    assert client.get("/health").get_json()["modules"]["hello"] == {
        "status": "healthy", "greetings": 1, "state": "started"
    }
    greeter = am.services.get("greeter")
    assert greeter is am.modules.get("hello")
    assert set(type(greeter).action_handlers()) == {"say_hello"}
    assert greeter.say_hello({"name": "Bo"}, None) == {"greeting": "Hello, Bo!"}
