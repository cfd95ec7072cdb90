"""Helpers for the foundation tests: module directories written per test."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def module_source(
    name: str,
    deps: tuple[str, ...] = (),
    *,
    fail: bool = False,
    required: bool = False,
    health: str = "healthy",
) -> str:
    """A module that logs ``init <name>`` / ``dispose <name>`` to the ``testmods`` logger and
    serves ``GET /<name>/ping``."""
    body = f"raise RuntimeError('boom in {name}')" if fail else "self.ready = True"
    return textwrap.dedent(
        f"""
        import logging

        from core import BaseModule

        log = logging.getLogger("testmods")


        class Module(BaseModule):
            name = {name!r}
            version = "1.2.3"
            dependencies = {list(deps)!r}
            required = {required!r}

            def initialize(self, app_manager):
                log.info("init {name}")
                {body}

            def register_routes(self, blueprint):
                @blueprint.get("/ping")
                def ping():
                    return {{"module": {name!r}}}

            def dispose(self):
                log.info("dispose {name}")

            def health_check(self):
                return {{"status": {health!r}}}
        """
    )


@pytest.fixture
def module_dir(tmp_path: Path) -> Callable[..., Path]:
    """``module_dir({"a": source, ...})`` writes ``<tmp>/mods/<name>/__init__.py`` for each."""
    root = tmp_path / "mods"

    def write(modules: dict[str, str]) -> Path:
        root.mkdir(exist_ok=True)
        for name, source in modules.items():
            (root / name).mkdir(exist_ok=True)
            (root / name / "__init__.py").write_text(source)
        return root

    return write


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
