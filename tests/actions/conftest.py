"""Fixtures for the actions tests: a tmp module directory with a small ``demo`` module (and a
``broken`` one whose initialize raises), a tmp actions directory, and an app factory."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DEMO_MODULE = """
from core import BaseModule, NotFound, action


class Demo(BaseModule):
    name = "demo"
    version = "1.0.0"

    def initialize(self, app_manager):
        self.calls = 0

    @action
    def echo(self, params, ctx):
        self.calls += 1
        return {"params": params, "identity": ctx.identity, "action": ctx.action}

    @action
    def create(self, params, ctx):
        ctx.status = 201
        return {"id": 1, **params}

    @action
    def boom(self, params, ctx):
        raise RuntimeError("do-not-leak-this-detail")

    @action
    def missing(self, params, ctx):
        raise NotFound("no such thing")

    def not_marked(self, params, ctx):
        return "never callable from YAML"
"""

BROKEN_MODULE = """
from core import BaseModule, action


class Broken(BaseModule):
    name = "broken"

    def initialize(self, app_manager):
        raise RuntimeError("cannot start")

    @action
    def ping(self, params, ctx):
        return "pong"
"""

BROKEN_ACTIONS = """\
version: 1
actions:
  broken_ping:
    handler: ping
    auth: public
"""

GOOD_DEMO = """\
version: 1
module: demo
actions:
  echo:
    handler: echo
    description: Echo the parameters back.
    auth: public
    params:
      title: {type: string, required: true, minLength: 1, maxLength: 20}
      priority: {type: integer, minimum: 1, maximum: 5, default: 3}
      tags: {type: array, items: {type: string, maxLength: 8}, maxItems: 3, default: []}
      done: {type: boolean}
      ratio: {type: number, nullable: true}
      due: {type: string, format: date-time}
      meta: {type: object, properties: {a: {type: integer, required: true}}}
  create:
    handler: create
    methods: [POST]
    auth: public
    additional_params: true
  item:
    handler: echo
    methods: [GET, DELETE]
    path: "items/<int:item_id>"
    auth: public
  boom:
    handler: boom
    auth: public
  missing:
    handler: missing
    auth: public
  private_echo:
    handler: echo
    auth: any
"""


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    root = tmp_path / "mods"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "__init__.py").write_text(DEMO_MODULE)
    (root / "broken").mkdir()
    (root / "broken" / "__init__.py").write_text(BROKEN_MODULE)
    (root / "broken" / "actions.yaml").write_text(BROKEN_ACTIONS)
    return root


@pytest.fixture
def actions_dir(tmp_path: Path) -> Path:
    path = tmp_path / "acts"
    path.mkdir()
    return path


def write(path: Path, text: str | bytes) -> Path:
    """Write a file and make sure its signature changes even on coarse-mtime filesystems."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text) if text.startswith("\n") else text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))
    return path


@pytest.fixture
def actions_app(make_app: Callable[..., Any], modules_dir: Path, actions_dir: Path) -> Callable[..., Any]:
    """``actions_app(files={"demo.yaml": text}, **settings)``: an app on the demo module."""

    def factory(files: dict[str, str] | None = None, **overrides: Any) -> Any:
        for name, text in (files if files is not None else {"demo.yaml": GOOD_DEMO}).items():
            write(actions_dir / name, text)
        return make_app(MODULES_DIR=str(modules_dir), ACTIONS_DIR=str(actions_dir), **overrides)

    return factory


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout:.1f} s")
