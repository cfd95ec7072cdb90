"""The README section "Declaring an action": its module, YAML, calls and CLI output are real."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("<!-- section:actions -->") : text.index("<!-- /section:actions -->")]


def blocks(lang: str) -> list[str]:
    return [textwrap_dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", section(), flags=re.S)]


def textwrap_dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


def test_readme_example_loads_and_answers_as_shown(make_app: Any, tmp_path: Path) -> None:
    python, yaml_text = blocks("python")[0], blocks("yaml")[0]
    (tmp_path / "mods" / "notes").mkdir(parents=True)
    (tmp_path / "mods" / "notes" / "__init__.py").write_text(python)
    (tmp_path / "acts").mkdir()
    (tmp_path / "acts" / "notes.yaml").write_text(yaml_text)
    app = make_app(MODULES_DIR=str(tmp_path / "mods"), ACTIONS_DIR=str(tmp_path / "acts"))
    assert app.extensions["keel"].actions.status()["errors"] == []
    client = app.test_client()

    console = blocks("console")[0].splitlines()
    for command, shown in zip(console[0::2], console[1::2], strict=True):
        m = re.search(r"-X (\w+) localhost:8080(\S+) .* -d '(.*)'$", command)
        assert m is not None, command
        response = client.open(m.group(2), method=m.group(1), data=m.group(3), content_type="application/json")
        expected = json.loads(shown)
        body = response.get_json()
        expected["request_id"] = body["request_id"]
        assert body == expected
        assert response.status_code == (201 if expected["success"] else 400)


def test_readme_validate_output_is_real(make_app: Any, tmp_path: Path) -> None:
    python, yaml_text = blocks("python")[0], blocks("yaml")[0]
    (tmp_path / "mods" / "notes").mkdir(parents=True)
    (tmp_path / "mods" / "notes" / "__init__.py").write_text(python)
    (tmp_path / "acts").mkdir()
    app = make_app(MODULES_DIR=str(tmp_path / "mods"), ACTIONS_DIR=str(tmp_path / "acts"))
    broken = tmp_path / "acts" / "notes.yaml"
    broken.write_text(yaml_text.replace("priority: {type: integer", "priority: {type: int"))
    result = app.test_cli_runner().invoke(args=["actions", "validate", str(broken)])
    assert result.exit_code == 1
    shown = blocks("console")[1].strip().splitlines()
    assert shown[0] == "$ flask --app app actions validate actions/notes.yaml"
    assert result.output.strip().splitlines() == [line.replace("actions/notes.yaml", str(broken)) for line in shown[1:]]
