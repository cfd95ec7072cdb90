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
        self.started_at = time.time()

    @action
    def info(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        am = self.app_manager
        assert am is not None
        actions = getattr(am, "actions", None)
        return {
            "version": am.version,
            "uptime_s": round(time.time() - am.started_at, 1),
            "modules": [{"name": m["name"], "state": m["state"]} for m in am.modules.info()],
            "action_count": actions.count() if actions is not None else 0,
        }

    @action
    def module_status(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        am = self.app_manager
        assert am is not None
        name = params["module_name"]
        for info in am.modules.info():
            if info["name"] == name:
                return {**info, "health": am.modules.module_health().get(name)}
        raise NotFound(f"no module named {name!r}")
