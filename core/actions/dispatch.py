"""HTTP surface of actions: calling them, listing them, OpenAPI and Swagger UI (SPEC §4.4-4.5).

Order of checks for ``/actions/<name>[/<path>]``: route (404 unknown action or path, 405
undeclared method) → the action's module must be running (503) → ban, authentication,
authorization and rate limits (:func:`core.http.guard.check`) → parameters → handler.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Request, Response, current_app, request, send_from_directory

from core.actions.params import CoercionError
from core.errors import (
    BadRequest,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from core.http import guard
from core.http.state import current_request_id, get_state

if TYPE_CHECKING:
    from core.actions.registry import CompiledAction
    from core.managers.actions import ActionManager

bp = Blueprint("keel_actions", __name__)

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
STARTED = "started"
NO_BODY: Any = object()


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
    am = manager.app_manager
    if am.modules.state(action.module) != STARTED:
        raise ServiceUnavailable(f"Action {name!r} is unavailable: module {action.module!r} is not running.")
    ctx = guard.check(action.requirement)
    params = _collect(req, action, method, path_values)
    started = time.perf_counter()
    status = 500
    try:
        result = action.handler(params, ctx)
        status = ctx.status
    except HTTPError as exc:
        status = exc.status
        raise
    finally:
        am.hooks.trigger(
            "action_executed",
            name=name,
            identity=ctx.identity,
            status=status,
            duration_ms=(time.perf_counter() - started) * 1e3,
        )
    response = current_app.json.response(
        {"success": True, "action": name, "result": result, "request_id": ctx.request_id}
    )
    response.status_code = status
    return response


def _read_body(request: Request) -> Any:
    """The JSON body, or ``NO_BODY`` when there is none. 413 over MAX_CONTENT_LENGTH, 415 when the
    body is not JSON, 400 when it does not parse (including nesting too deep to parse)."""
    environ = request.environ
    # No Content-Length (or an invalid/zero one, which reads as empty below) and no
    # Transfer-Encoding: no body. Read from the environ: request.content_length re-parses.
    if not environ.get("CONTENT_LENGTH") and environ.get("HTTP_TRANSFER_ENCODING") is None:
        return NO_BODY
    data = request.get_data(cache=True)
    if not data:
        return NO_BODY
    if environ.get("CONTENT_TYPE") != "application/json" and not request.is_json:  # fast path first
        raise UnsupportedMediaType()
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise BadRequest(f"The JSON body has the key {exc.key!r} more than once.") from None
    except (ValueError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else "it is not valid JSON"
        raise BadRequest(f"The request body could not be read: {reason}.") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a repeated key are refused (which one would win is a guess)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def _collect(request: Request, action: CompiledAction, method: str, path_values: dict[str, Any]) -> dict[str, Any]:
    """Parameters from the path, the query string and the JSON body, then validated."""
    values = path_values
    details: list[dict[str, str]] = []
    failed: set[str] = set()
    by_name = action.params.by_name
    args = request.args
    if args:
        for key in args:
            raws = args.getlist(key)
            if key in values:
                details.append({"param": key, "message": "given in two places (path and query string); give it once"})
                failed.add(key)
                continue
            param = by_name.get(key)
            if param is None:
                values[key] = raws[0] if len(raws) == 1 else raws
                continue
            try:
                values[key] = param.coerce(raws)
            except CoercionError as exc:
                details.append({"param": key, "message": str(exc)})
                failed.add(key)
    if method in BODY_METHODS:
        body = _read_body(request)
        if body is not NO_BODY:
            if type(body) is not dict:
                raise BadRequest("The JSON body must be an object whose keys are the parameters.")
            for key, value in body.items():
                if key in values or key in failed:
                    details.append({"param": key, "message": "given in two places (path, query, body); give it once"})
                    failed.add(key)
                    continue
                values[key] = value
    elif request.environ.get("CONTENT_LENGTH") and request.content_length and request.mimetype and not request.is_json:
        raise UnsupportedMediaType()
    return action.params.validate(values, details or None, failed)


# --- discovery and documentation ------------------------------------------------------------


@bp.get("/actions")
def list_actions() -> Any:
    """Every action's public metadata (secret defaults omitted)."""
    registry = _manager().registry
    actions = [{k: v for k, v in a.metadata.items() if k != "file"} for a in registry.actions.values()]
    response = current_app.json.response(
        {"success": True, "count": len(actions), "actions": actions, "request_id": current_request_id()}
    )
    return response


@bp.get("/openapi.json")
def openapi_json() -> Any:
    """This OpenAPI 3.1 document."""
    return current_app.json.response(_manager().openapi())


def _swagger_dir() -> Path:
    """Swagger UI 5 (the first to read OpenAPI 3.1), as bundled by the flask-swagger-ui package;
    only its static files are used."""
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).parent / "dist"


_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Keel API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/swagger-ui-standalone-preset.js"></script>
<script src="docs/keel-init.js"></script>
</body>
</html>
"""

_INIT_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""

_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"})


@bp.get("/docs")
def docs() -> Response:
    """Swagger UI over ``/openapi.json``, from local assets (no CDN: works with no internet)."""
    return Response(_DOCS_HTML, mimetype="text/html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str) -> Response:
    if filename == "keel-init.js":
        return Response(_INIT_JS, mimetype="application/javascript")
    if filename not in _ASSETS:
        raise NotFound()
    return send_from_directory(_swagger_dir(), filename, max_age=3600)


__all__ = ["bp", "dispatch"]
