"""The ``admin`` module: operating Keel through actions (SPEC §5). Every action needs role admin.

Thin handlers: the work is done by the managers (bans by the limiter, tokens by the JWT
manager, the action registry by the action manager).
"""

from __future__ import annotations

from typing import Any

from core import ActionContext, BaseModule, action


class Admin(BaseModule):
    name = "admin"
    version = "1.0.0"
    dependencies = ["auth"]  # noqa: RUF012 - class-level declaration, never mutated

    def initialize(self, app_manager: Any) -> None:
        self.am = app_manager

    # -- actions (owned by the actions issue) ------------------------------------------------
    @action
    def actions_status(self, params: dict[str, Any], ctx: ActionContext) -> Any:
        return self.am.actions.status()

    # -- bans (owned by the rate-limit issue) ------------------------------------------------
    @action
    def list_bans(self, params: dict[str, Any], ctx: ActionContext) -> Any:
        return self.am.limiter.list_bans()

    @action
    def ban(self, params: dict[str, Any], ctx: ActionContext) -> Any:
        return self.am.limiter.ban(params["kind"], params["identifier"], params["seconds"], actor=ctx.identity)

    @action
    def lift_ban(self, params: dict[str, Any], ctx: ActionContext) -> Any:
        return self.am.limiter.lift_ban(params["kind"], params["identifier"], actor=ctx.identity)

    # -- tokens (owned by the auth issue) ----------------------------------------------------
    @action
    def revoke_user_tokens(self, params: dict[str, Any], ctx: ActionContext) -> Any:
        return self.am.jwt.revoke_user_tokens(params["user_id"], actor=ctx.identity)
