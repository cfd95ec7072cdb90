"""A module for the benchmarks: one handler that echoes its validated parameters."""

from __future__ import annotations

from typing import Any

from core import ActionContext, BaseModule, action


class BenchEcho(BaseModule):
    name = "benchecho"
    version = "1.0.0"

    def initialize(self, app_manager: Any) -> None:
        self.am = app_manager

    @action
    def echo(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        user = ctx.user or {}
        return {"title": params["title"], "priority": params["priority"], "user": user.get("id")}

    @action
    def params(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        """Echo every validated parameter (the request shapes of ``bench/shapes.py``)."""
        caller = ctx.user or ctx.api_key or {}
        return {**params, "user": caller.get("id")}
