"""``@protect``: a module's own Flask route, guarded and documented like a YAML action.

::

    @blueprint.post("/notes")
    @protect(auth="user", roles=["editor"], rate_limit="10/minute", status=201,
             params={"text": {"type": "string", "required": True, "maxLength": 500}})
    def add_note(params, ctx):
        return {"note": notes.add(params["text"], by=ctx.user["id"])}

One declaration gives the route what an action gets from its YAML, in the same order (SPEC
§4.4): ban → authentication → authorization → rate limits (:func:`core.http.guard.check`,
with the per-identity limit keyed by the route's name) → parameters (path, query string and
JSON body, through the one body parser and the compiled validators of actions) → the view. Errors
have the SPEC §3 shape; ``/openapi.json`` describes the route from the same declaration.

The declaration is checked when the decorator runs (at ``register_routes``), by the action
file checker itself (:func:`core.actions.schema.check_document`), and compiled once
(:func:`core.actions.registry.compile_action`): a request pays for the checks, not for reading
the declaration.

The view is called as ``view(params, ctx)``: ``params`` holds the validated parameters (and
the route's undeclared path variables, as Flask converted them), ``ctx`` is the
:class:`~core.module.ActionContext`. It returns a dict, whose keys are added to
``{"success": true, ..., "request_id": "..."}``; or ``(dict, status)``; or ``None``; or a Flask
``Response`` of its own. The answer's status is ``status`` (default 200) unless the view sets
``ctx.status`` or returns one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from flask import current_app, request
from werkzeug.sansio.response import Response

from core.actions.openapi import ERROR_REF, SECURITY_BY_AUTH
from core.actions.registry import CompiledAction, compile_action, display_path
from core.actions.schema import ActionSpec, ParamDecl, check_document
from core.actions.yamlsafe import parse_tree
from core.errors import ActionDefinitionError
from core.http.body import BODY_METHODS, collect_params
from core.http.guard import check
from core.http.state import get_state
from core.module import ActionContext

View = Callable[[dict[str, Any], ActionContext], Any]


def protect(
    *,
    auth: str = "any",
    roles: list[str] | tuple[str, ...] = (),
    scopes: list[str] | tuple[str, ...] = (),
    rate_limit: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    additional_params: bool = False,
    summary: str | None = None,
    status: int = 200,
    name: str | None = None,
    no_store: bool = False,
) -> Callable[[View], Callable[..., Response]]:
    """Guard, validate and document a Flask route; put it under ``@blueprint.route(...)``.

    ``auth``, ``roles``, ``scopes``, ``rate_limit``, ``params`` and ``additional_params`` mean
    what they mean in action YAML (SPEC §4.1), with the same parameter keywords. ``summary``:
    the route's one line in OpenAPI (default: the first line of the view's docstring, whose
    whole text is the operation's description). ``status``: the success status (e.g. 201).
    ``name``: the route's name for its rate limit and ``ctx.action`` (default
    ``<package>_<function>``, e.g. ``auth_login``; the rules of an action name). ``no_store``:
    the answer carries a secret (tokens, a new key): ``Cache-Control: no-store`` (RFC 6749 §5.1).
    Raises :class:`~core.errors.ActionDefinitionError` for a declaration the action checker
    refuses, naming the view, its file and line, and each problem.
    """

    def decorate(view: View) -> Callable[..., Response]:
        where = _where(view)
        _check_signature(view, where)
        if type(status) is not int or not 200 <= status < 300:
            raise ActionDefinitionError(f"@protect on {where}: status must be a 2xx integer, got {status!r}")
        declaration = {
            "handler": "view",
            "auth": auth,
            "roles": roles,
            "scopes": scopes,
            "rate_limit": rate_limit,
            "params": dict(params or {}),
            "additional_params": additional_params,
            "description": summary,
        }
        route_name = name if name is not None else f"{view.__module__.rpartition('.')[2]}_{view.__name__}"
        spec = _check(route_name, {k: v for k, v in declaration.items() if v is not None}, where)
        compiled = compile_action(spec, where, lambda _module, _method: view)
        return _endpoint(view, compiled, status, summary, no_store)

    return decorate


def _where(view: Callable[..., Any]) -> str:
    """``Auth.register_routes.<locals>.login (modules/auth/__init__.py:120)``, for errors."""
    try:
        source = inspect.getsourcefile(view)
    except TypeError:  # a builtin: no source file
        source = None
    file = display_path(Path(source)) if source else "?"
    code = getattr(view, "__code__", None)
    line = f":{code.co_firstlineno}" if code is not None else ""
    return f"{view.__qualname__} ({file}{line})"


def _check_signature(view: Callable[..., Any], where: str) -> None:
    if inspect.iscoroutinefunction(view):
        raise ActionDefinitionError(f"@protect on {where}: the view must be a plain function, not async")
    try:
        parameters = list(inspect.signature(view).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 2:
        shown = ", ".join(p.name for p in parameters)
        raise ActionDefinitionError(
            f"@protect on {where}: the view must have the signature (params, ctx); it has ({shown})"
        )


class _Dumper(yaml.SafeDumper):
    """Plain YAML for the checker: a value used twice is written twice (no anchors)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _lists(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _check(name: str, declaration: dict[str, Any], where: str) -> ActionSpec:
    """The declaration, checked as the action ``name`` of an action file would be."""
    document = {"version": 1, "module": "route", "actions": {name: declaration}}
    try:
        text = yaml.dump(_lists(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as exc:
        raise ActionDefinitionError(
            f"@protect on {where}: {exc}; declare plain values (str, int, float, bool, None, list, dict)"
        ) from None
    root, problems = parse_tree(text)
    specs, more = check_document(root, implied_module=None, resolver=lambda _module, _method: None)
    problems += more
    if problems or len(specs) != 1:
        prefix = f"actions.{name}."
        errors = [
            f"{p.key.removeprefix(prefix)}: {p.message}" if p.key != prefix[:-1] else f"{p.message}; pass name=..."
            for p in problems
        ]
        raise ActionDefinitionError(f"@protect on {where}: " + "; ".join(errors), errors)
    return specs[0]


def _endpoint(
    view: View, compiled: CompiledAction, status: int, summary: str | None, no_store: bool
) -> Callable[..., Response]:
    requirement = compiled.requirement
    params = compiled.params
    declared = params.by_name

    @functools.wraps(view)
    def endpoint(**path: Any) -> Response:
        if no_store:
            get_state().no_store = True
        ctx = check(requirement)
        ctx.status = status
        passthrough = [k for k in path if k not in declared] if path else ()
        values = collect_params(request._get_current_object(), params, path, passthrough)  # type: ignore[attr-defined]
        return _respond(view(values, ctx), ctx)

    endpoint.__keel_openapi__ = _OpenAPI(compiled.spec, status, summary, inspect.getdoc(view))  # type: ignore[attr-defined]
    return endpoint


def _respond(result: Any, ctx: ActionContext) -> Response:
    if type(result) is tuple and len(result) == 2:
        result, ctx.status = result
    if isinstance(result, Response):
        return result
    if result is None:
        body = {"success": True, "request_id": ctx.request_id}
    elif isinstance(result, dict):
        body = {"success": True, **result, "request_id": ctx.request_id}
    else:
        raise TypeError(
            f"@protect view for {ctx.action!r} returned {type(result).__name__}; return a dict (its keys go "
            "into the answer), (dict, status), None or a Response"
        )
    response = current_app.json.response(body)
    response.status_code = ctx.status
    return response


class _OpenAPI:
    """The route's OpenAPI operation, built from its declaration when ``/openapi.json`` asks
    (``core.actions.openapi`` calls it with the method and the rule's path parameters)."""

    def __init__(self, spec: ActionSpec, status: int, summary: str | None, description: str | None) -> None:
        self.spec = spec
        success = {"type": "object", "required": ["success", "request_id"], "properties": {"success": {"const": True}}}
        self.base: dict[str, Any] = {
            "security": SECURITY_BY_AUTH[spec.auth],
            "responses": {
                str(status): {"description": "Success", "content": {"application/json": {"schema": success}}},
                "default": ERROR_REF,
            },
        }
        if summary:
            self.base["summary"] = summary
        if description:
            self.base["description"] = description
        extensions = {"x-keel-roles": list(spec.roles), "x-keel-scopes": list(spec.scopes)}
        if spec.rate_limit:
            extensions["x-keel-rate-limit"] = [spec.rate_limit]
        self.base.update({k: v for k, v in extensions.items() if v})

    def __call__(self, method: str, path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
        declared = self.spec.params
        op = dict(self.base)
        parameters = [
            {**p, "schema": _schema(declared[p["name"]])} if p["name"] in declared else p for p in path_parameters
        ]
        in_path = {p["name"] for p in path_parameters}
        others = [p for name, p in declared.items() if name not in in_path]
        if method.upper() in BODY_METHODS:
            if others:
                op["requestBody"] = self._body(others)
        else:
            parameters += [_query(p) for p in others if "object" not in _types(p)]
        if parameters:
            op["parameters"] = parameters
        return op

    def _body(self, others: list[ParamDecl]) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {p.name: _schema(p) for p in others},
            "additionalProperties": self.spec.additional_params,
        }
        required = [p.name for p in others if p.required]
        if required:
            schema["required"] = required
        return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def _types(p: ParamDecl) -> list[str]:
    t = p.schema["type"]
    return t if isinstance(t, list) else [t]


def _schema(p: ParamDecl) -> dict[str, Any]:
    schema = dict(p.schema)
    if p.secret:
        schema["writeOnly"] = True
    elif p.has_default:
        schema["default"] = p.default
    return schema


def _query(p: ParamDecl) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": p.name, "in": "query", "required": p.required, "schema": _schema(p)}
    if "array" in _types(p):
        entry.update(style="form", explode=True)
    return entry
