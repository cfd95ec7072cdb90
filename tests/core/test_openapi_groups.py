"""/openapi.json groups every operation by module, with a readable one-line summary (what /docs
shows; the browser test in tests/browser/ looks at the page itself)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from core.actions.openapi import summary_of


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_operations_are_grouped_by_module(client: Any, am: Any) -> None:
    doc = client.get("/openapi.json").get_json()
    modules = [m["name"] for m in am.modules.info()]
    assert [t["name"] for t in doc["tags"]] == [*sorted(modules), "keel"]
    for path, _method, op in operations(doc):
        (tag,) = op["tags"]
        if path.startswith("/actions/"):
            assert tag == am.actions.get(path.split("/")[2]).module, path
        elif path.startswith("/auth/"):
            assert tag == "auth", path  # the auth module's own routes
        else:
            assert tag == "keel", path  # /health, /metrics, /docs, /openapi.json, /actions
    assert all(n == 1 for n in Counter(op["operationId"] for _p, _m, op in operations(doc)).values())


def test_every_summary_is_one_readable_line(client: Any) -> None:
    doc = client.get("/openapi.json").get_json()
    for path, method, op in operations(doc):
        summary = op["summary"]
        assert summary and "\n" not in summary and "``" not in summary, (path, method, summary)
        assert "." not in summary.split()[0] and not summary.startswith(("module_", "keel_")), (path, summary)
    by_path = {path: op for path, _m, op in operations(doc)}
    assert by_path["/healthz"]["summary"] == "Liveness: 200 whenever the process serves."
    assert by_path["/actions"]["summary"].startswith("Every action's public metadata (secret defaults omitted)")
    assert by_path["/auth/login"]["summary"] == "Log in: a token pair"


@pytest.mark.parametrize(
    ("text", "summary"),
    [
        ("One line.", "One line."),
        ("First sentence. Second one.", "First sentence."),
        ("Wrapped over\n  two lines, with ``code``.\n\nA second paragraph.", "Wrapped over two lines, with code."),
        ("A version 1.2.3 stays whole", "A version 1.2.3 stays whole"),
        ("", "fallback"),
        (None, "fallback"),
    ],
)
def test_summary_of(text: str | None, summary: str) -> None:
    assert summary_of(text, "fallback") == summary
