"""HTTP surface of actions: calling them, listing them, the OpenAPI document (SPEC §4.4-4.5).

The Swagger UI page over the document is :mod:`core.http.docs`.

Order of checks for ``/actions/<name>[/<path>]``: route (404 unknown action or path, 405
undeclared method) → the action's module must be running (503) → ban, authentication,
authorization and rate limits (:func:`core.http.guard.check`) → parameters → handler.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Request, current_app, request

from core.auth.policy import ADMIN_ROLE
from core.errors import (
    HTTPError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from core.http import guard
from core.http.body import collect_params
from core.http.state import current_request_id, get_state
from core.logs import audit

if TYPE_CHECKING:
    from core.managers.actions import ActionManager

bp = Blueprint("keel_actions", __name__)

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _manager() -> ActionManager:
    manager: ActionManager = current_app.extensions["keel.actions"]
    return manager


@bp.route("/actions/<name>", methods=ALL_METHODS)
def call_action(name: str) -> Any:
    return dispatch(_manager(), name, None)


@bp.route("/actions/<name>/<path:rest>", methods=ALL_METHODS)
def call_action_path(name: str, rest: str) -> Any:
    return dispatch(_manager(), name, rest)


def dispatch(manager: ActionManager, name: str, rest: str | None) -> Any:
    action = manager.registry.actions.get(name)
    if action is None:
        raise NotFound(f"No action named {name!r}.")
    req: Request = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
    method = req.method
    if method == "HEAD":
        method = "GET"
    if method not in action.methods:
        raise MethodNotAllowed(f"Action {name!r} accepts {action.allow}.", headers={"Allow": action.allow})
    path_values = action.match_path(rest)
    if path_values is None:
        if action.spec.path:
            raise NotFound(f"Action {name!r} is called as /actions/{name}/{action.spec.path}.")
        raise NotFound(f"Action {name!r} takes no path parameters.")
    get_state().action = name
    am = manager.am
    if not am.modules.running(action.module):
        raise ServiceUnavailable(f"Action {name!r} is unavailable: {manager.unavailable(action.module)}.")
    ctx = guard.check(action.requirement)
    params = collect_params(req, action.params, path_values)
    started = time.perf_counter()
    status = 500
    try:
        result = action.handler(params, ctx)
        status = ctx.status
    except HTTPError as exc:
        status = exc.status
        raise
    finally:
        if ADMIN_ROLE in action.requirement.roles:  # every admin action is a security event
            audit("admin_action", "ok" if status < 400 else "failed", action=name, status=status)
        hooks = am.hooks
        if hooks.listening("action_executed"):  # else nothing to build the event's data for
            hooks.trigger(
                "action_executed",
                name=name,
                identity=ctx.identity,
                status=status,
                duration_ms=(time.perf_counter() - started) * 1e3,
            )
    response = current_app.json.response(
        {"success": True, "action": name, "result": result, "request_id": ctx.request_id}
    )
    if response.status_code != status:  # the setter builds the status line again
        response.status_code = status
    return response


# --- discovery and documentation ------------------------------------------------------------


@bp.get("/actions")
def list_actions() -> Any:
    """Every action's public metadata (secret defaults omitted) and its ``status``: ``available``,
    or ``disabled`` when its module is disabled or not running (the action answers 503)."""
    manager = _manager()
    actions = []
    for a in manager.registry.actions.values():
        entry = {k: v for k, v in a.metadata.items() if k != "file"}
        entry["status"] = "available" if manager.unavailable(a.module) is None else "disabled"
        actions.append(entry)
    response = current_app.json.response(
        {"success": True, "count": len(actions), "actions": actions, "request_id": current_request_id()}
    )
    return response


@bp.get("/openapi.json")
def openapi_json() -> Any:
    """This OpenAPI 3.1 document."""
    return current_app.json.response(_manager().openapi())


__all__ = ["bp", "dispatch"]
