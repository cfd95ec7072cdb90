"""The README's module walkthrough works as written (a module author follows these steps)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
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


def _matches(shown: Any, actual: Any) -> bool:
    """``shown`` (the README's answer) equals ``actual``, "…" standing for any value."""
    if shown == "…":
        return True
    if isinstance(shown, dict):
        return isinstance(actual, dict) and shown.keys() == actual.keys() and all(
            _matches(shown[k], actual[k]) for k in shown
        )
    if isinstance(shown, list):
        return isinstance(actual, list) and len(shown) == len(actual) and all(map(_matches, shown, actual))
    return bool(shown == actual)


STATUS_OF = {"unauthorized": 401, "validation_error": 400, "bad_request": 400}


def test_readme_protected_route_answers_as_shown(make_app: Any, tmp_path: Path) -> None:
    """The "Protected routes" calls, replayed in order against the README's hello module and
    the shipped auth module (copied next to it: it needs nothing but ``core``)."""
    modules = tmp_path / "mods"
    (modules / "hello").mkdir(parents=True)
    (modules / "hello" / "__init__.py").write_text(readme_module_code())
    shutil.copytree(ROOT / "modules" / "auth", modules / "auth", ignore=shutil.ignore_patterns("__pycache__"))
    app = make_app(MODULES_DIR=str(modules), ACTIONS_DIR=str(tmp_path / "actions"))
    client = app.test_client()
    (console,) = re.findall(r"```console\n(.*?)```", modules_section().split("### Walkthrough")[0], re.S)
    lines = console.splitlines()
    token, checked = "", 0
    for i, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        command = line[2:]
        if command.startswith("TOKEN=$("):
            command = command[len("TOKEN=$(") : command.index(" | jq")]
        args = shlex.split(command.replace("$TOKEN", token))
        method = args[args.index("-X") + 1] if "-X" in args else "GET"
        url = next(a for a in args if a.startswith("localhost:8080"))[len("localhost:8080") :]
        headers = dict(h.split(": ", 1) for h in (args[j + 1] for j, a in enumerate(args) if a == "-H"))
        response = client.open(url, method=method, data=args[args.index("-d") + 1], headers=headers)
        if line.startswith("$ TOKEN="):
            token = response.get_json()["access_token"]
            continue
        if "/auth/register" in url:
            assert response.status_code == 201, response.get_json()
            continue
        shown = json.loads(lines[i + 1])
        assert _matches(shown, response.get_json()), (line, response.get_json())
        expected = 201 if shown["success"] else STATUS_OF[shown["error"]["code"]]
        assert response.status_code == expected, line
        checked += 1
    assert token and checked == 4

    # the same declaration documents the route
    operation = client.get("/openapi.json").get_json()["paths"]["/hello/notes"]["post"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert operation["summary"] == "Leave a note for the next visitor."
    assert operation["x-keel-rate-limit"] == ["5/minute"]
    assert set(operation["responses"]) == {"201", "default"}
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 200}},
        "required": ["text"],
        "additionalProperties": False,
    }
    # and its limit: 5 per minute per identity; the user's 3 calls above count (the limit is
    # checked before the parameters), the anonymous one does not
    bearer = {"Authorization": f"Bearer {token}"}
    statuses = [client.post("/hello/notes", json={"text": "x"}, headers=bearer).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]


def test_readme_protect_declaration_error(make_app: Any, tmp_path: Path) -> None:
    """A typo in the declaration fails the module at start with the README's message."""
    (shown,) = [line for line in modules_section().splitlines() if line.startswith("ActionDefinitionError: ")]
    m = re.fullmatch(r"(ActionDefinitionError: @protect on \S+) \((\S+):(\d+)\): (.*)", shown)
    assert m is not None, shown
    head, path, line, problem = m.groups()
    code = readme_module_code()
    assert '"type": "string", "required": True' in code
    modules = tmp_path / "mods"
    (modules / "hello").mkdir(parents=True)
    typo = code.replace('"type": "string", "required": True', '"type": "str", "required": True')
    (modules / "hello" / "__init__.py").write_text(typo)
    app = make_app(MODULES_DIR=str(modules), ACTIONS_DIR=str(tmp_path / "actions"))
    (info,) = app.extensions["keel"].modules.info()
    assert info["state"] == "failed"
    real = str(modules / "hello" / "__init__.py")
    assert path == "modules/hello/__init__.py"
    assert info["error"] == f"register_routes failed: {head} ({real}:{line}): {problem}"
    assert app.test_client().get("/hello/greet/Ada").status_code in (404, 503)
