"""The ``system`` module: what is running (SPEC §5)."""

from __future__ import annotations

import time
from typing import Any

from core import ActionContext, BaseModule, NotFound, action


class System(BaseModule):
    name = "system"
    version = "1.0.0"
    required = True

    def initialize(self, app_manager: Any) -> None:
        self.am = app_manager

    @action
    def info(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        am = self.am
        return {
            "version": am.version,
            "uptime_s": round(time.time() - am.started_at, 1),
            "modules": [{"name": m["name"], "state": m["state"]} for m in am.modules.info()],
            "action_count": am.actions.count(),
        }

    @action
    def module_status(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        am = self.am
        name = params["module_name"]
        for info in am.modules.info():
            if info["name"] == name:
                return {**info, "health": am.modules.module_health().get(name)}
        raise NotFound(f"no module named {name!r}")
