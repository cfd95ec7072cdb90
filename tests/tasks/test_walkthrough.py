"""The README's "Walkthrough: the tasks module": its code excerpts are the real code and its
calls answer exactly as shown ("…" marks values that differ per run)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Walkthrough: the `tasks` module")
    return text[start : text.index("<!-- /section:modules -->")]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", walkthrough(), flags=re.S)


def test_code_excerpts_are_the_module_source() -> None:
    source = (ROOT / "modules" / "tasks" / "__init__.py").read_text(encoding="utf-8")
    excerpts = blocks("python")
    assert len(excerpts) == 3
    for excerpt in excerpts:
        assert excerpt in source, excerpt[:80]


def test_yaml_excerpt_is_the_module_file() -> None:
    shown = yaml.safe_load(blocks("yaml")[0])
    real = yaml.safe_load((ROOT / "modules" / "tasks" / "actions.yaml").read_text(encoding="utf-8"))
    assert shown["version"] == real["version"] and shown["module"] == real["module"]
    for name, spec in shown["actions"].items():
        assert spec == real["actions"][name], name


def _matches(shown: Any, actual: Any) -> bool:
    if shown == "…":
        return True
    if isinstance(shown, dict):
        return (
            isinstance(actual, dict)
            and shown.keys() == actual.keys()
            and all(_matches(shown[k], actual[k]) for k in shown)
        )
    if isinstance(shown, list):
        return isinstance(actual, list) and len(shown) == len(actual) and all(map(_matches, shown, actual))
    return bool(shown == actual)


def test_calls_answer_as_shown(make_app: Callable[..., Any]) -> None:
    client = make_app().test_client()
    lines = blocks("console")[0].splitlines()
    token, checked = None, 0
    for i, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        command = line[2:]
        if command.startswith("TOKEN=$("):
            command = command[len("TOKEN=$(") : command.index(" | jq")]
        args = shlex.split(command.replace("$TOKEN", token or ""))
        method = args[args.index("-X") + 1] if "-X" in args else "GET"
        url = next(a for a in args if a.startswith("localhost:8080"))[len("localhost:8080") :]
        body = args[args.index("-d") + 1] if "-d" in args else None
        headers = dict(h.split(": ", 1) for h in (args[j + 1] for j, a in enumerate(args) if a == "-H"))
        response = client.open(url, method=method, data=body, headers=headers)
        assert response.status_code < 500, (line, response.get_json())
        if line.startswith("$ TOKEN="):
            token = response.get_json()["access_token"]
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.startswith("{"):
            shown = json.loads(following)
            assert _matches(shown, response.get_json()), (line, response.get_json())
            expected_status = 201 if "create_task" in url else (200 if shown["success"] else 409)
            assert response.status_code == expected_status, line
            checked += 1
    assert token is not None and checked == 5
