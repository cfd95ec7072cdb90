"""The README's module walkthrough works as written (a module author follows these steps)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def modules_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("<!-- section:modules -->", 1)[1].split("<!-- /section:modules -->", 1)[0]


def readme_module_code() -> str:
    section = modules_section()
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    (code,) = [b for b in blocks if b.startswith("# modules/hello/__init__.py\n")]
    return code


def test_readme_minimal_module_walkthrough(make_app: Any, tmp_path: Path) -> None:
    modules = tmp_path / "mods"
    (modules / "hello").mkdir(parents=True)
    (modules / "hello" / "__init__.py").write_text(readme_module_code())
    app = make_app(MODULES_DIR=str(modules), ACTIONS_DIR=str(tmp_path / "actions"))
    am = app.extensions["keel"]

    shown = modules_section().splitlines()
    listing = app.test_cli_runner().invoke(args=["modules", "list"]).output
    (listed,) = [line for line in shown if line.startswith("hello ")]
    assert listed in listing.splitlines(), listing

    client = app.test_client()
    response = client.get("/hello/greet/Ada")
    (answer,) = [line for line in shown if line.startswith('{"greeting"')]
    assert response.get_data(as_text=True).strip() == answer
    assert response.get_json() == {"greeting": "Hello, Ada!", "count": 1}
    assert client.get("/health").get_json()["modules"]["hello"] == {
        "status": "healthy", "greetings": 1, "state": "started"
    }
    greeter = am.services.get("greeter")
    assert greeter is am.modules.get("hello")
    assert set(type(greeter).action_handlers()) == {"say_hello"}
    assert greeter.say_hello({"name": "Bo"}, None) == {"greeting": "Hello, Bo!"}
