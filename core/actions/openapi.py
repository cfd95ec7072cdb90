"""OpenAPI 3.1 document of every action and every other route (SPEC §4.5).

Generated from the loaded registry and ``app.url_map``, never written by hand (DESIGN habit
12). A view function may carry ``__keel_openapi__`` (a dict merged into its operations, e.g.
``{"security": [], "summary": "..."}``, or ``f(method, path_parameters) -> dict`` as
``core.http.protect`` sets it) to describe itself better than the defaults, or ``False`` to be
left out (a page for people, not an API: ``/admin``).

Operations are grouped by module: the tag of an action is its module, of a module's own route
(blueprint ``module_<name>``) the module's name, of the framework's routes ``keel``. A summary is
the first sentence of the description or docstring, as plain text.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from core.actions.registry import CompiledAction, Registry
from core.actions.schema import ActionSpec, ParamDecl

ERROR_REF = {"$ref": "#/components/responses/Error"}
BODY_METHODS = ("POST", "PUT", "PATCH")
SECURITY_BY_AUTH: dict[str, list[dict[str, list[str]]]] = {
    "public": [],
    "user": [{"bearerAuth": []}],
    "api_key": [{"apiKey": []}],
    "any": [{"bearerAuth": []}, {"apiKey": []}],
}
PUBLIC_ENDPOINTS = frozenset(
    {
        "keel_health.healthz",
        "keel_health.ready",
        "keel_health.health",
        "keel_metrics.metrics",
        "keel_actions.list_actions",
        "keel_actions.openapi_json",
        "keel_docs.docs",
    }
)
SKIPPED_ENDPOINTS = frozenset(
    {"static", "keel_actions.call_action", "keel_actions.call_action_path", "keel_docs.docs_asset"}
)
_RULE_PARAM = re.compile(r"<(?:([A-Za-z_]\w*)(?:\([^)]*\))?:)?([A-Za-z_]\w*)>")
FRAMEWORK_TAG = "keel"
MODULE_BLUEPRINT = "module_"  # core.managers.modules names a module's blueprint module_<name>
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "uuid": {"type": "string", "format": "uuid"},
}


def _components() -> dict[str, Any]:
    error = {
        "type": "object",
        "required": ["success", "error", "request_id"],
        "properties": {
            "success": {"const": False},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "examples": ["validation_error"]},
                    "message": {"type": "string"},
                    "details": {
                        "description": "for validation_error: a list of {param, message}",
                    },
                },
            },
            "request_id": {"type": "string"},
        },
    }
    return {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "schemas": {"Error": error},
        "responses": {
            "Error": {
                "description": "Error (SPEC §3 shape)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
    }


def summary_of(text: str | None, fallback: str) -> str:
    """The first sentence of ``text``'s first paragraph on one line, reST literals as plain
    text (Swagger UI shows a summary verbatim); ``fallback`` when there is no text."""
    paragraph = " ".join((text or "").strip().split("\n\n")[0].split())
    first = _SENTENCE_END.split(paragraph.replace("``", ""), maxsplit=1)[0]
    return first or fallback


def route_tag(endpoint: str) -> str:
    """The group of a route: its module's name, or ``keel`` for the framework's own."""
    blueprint, dot, _ = endpoint.partition(".")
    if dot and blueprint.startswith(MODULE_BLUEPRINT):
        return blueprint.removeprefix(MODULE_BLUEPRINT)
    return FRAMEWORK_TAG


def _action_operations(action: CompiledAction) -> tuple[str, dict[str, Any]]:
    """The URL of an action and one operation per method it accepts."""
    spec = action.spec
    url = f"/actions/{spec.name}"
    if spec.path:
        url += "/" + _RULE_PARAM.sub(lambda m: "{" + m.group(2) + "}", spec.path)
    path_params = [
        {"name": pname, "in": "path", "required": True, "schema": dict(spec.params[pname].schema)}
        for pname, _conv in spec.path_params
    ]
    other = [p for p in spec.params.values() if not p.in_path]
    body_props = _body_properties(other)
    success = _success_schema(spec)
    operations: dict[str, Any] = {}
    for method in spec.methods:
        op = _operation(spec, method, success)
        parameters = list(path_params)
        if method in BODY_METHODS:
            op["requestBody"] = _request_body(spec, body_props, [p.name for p in other if p.required])
            op["responses"]["413"] = ERROR_REF
            op["responses"]["415"] = ERROR_REF
        else:
            parameters.extend(_query_parameters(other, body_props))
        if parameters:
            op["parameters"] = parameters
        operations[method.lower()] = op
    return url, operations


def _body_properties(params: list[ParamDecl]) -> dict[str, Any]:
    """Each parameter's schema as documented: secret ones write-only, defaults shown."""
    props: dict[str, Any] = {}
    for p in params:
        schema = dict(p.schema)
        if p.secret:
            schema["writeOnly"] = True
        elif p.has_default:
            schema["default"] = p.default
        props[p.name] = schema
    return props


def _success_schema(spec: ActionSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "action", "result", "request_id"],
        "properties": {
            "success": {"const": True},
            "action": {"const": spec.name},
            "result": spec.returns if spec.returns is not None else {},
            "request_id": {"type": "string"},
        },
    }


def _operation(spec: ActionSpec, method: str, success: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": spec.name if len(spec.methods) == 1 else f"{spec.name}_{method.lower()}",
        "tags": [spec.module],
        "summary": summary_of(spec.description, spec.name),
        "security": SECURITY_BY_AUTH[spec.auth],
        "responses": {
            "200": {"description": "Success", "content": {"application/json": {"schema": success}}},
            # a handler may answer 201 (ctx.status) when it created something
            "201": {"description": "Created", "content": {"application/json": {"schema": success}}},
            "400": ERROR_REF,
            "404": ERROR_REF,
            "405": ERROR_REF,
            "409": ERROR_REF,  # handlers raise Conflict (duplicate, transition, version)
            "429": ERROR_REF,
            "500": ERROR_REF,
            "503": ERROR_REF,
        },
    }
    if spec.description:
        op["description"] = spec.description
    if spec.deprecated:
        op["deprecated"] = True
    if spec.auth != "public":
        op["responses"]["401"] = ERROR_REF
        op["responses"]["403"] = ERROR_REF
    extensions = {"x-keel-roles": list(spec.roles), "x-keel-scopes": list(spec.scopes)}
    if spec.rate_limit:
        extensions["x-keel-rate-limit"] = [spec.rate_limit]
    op.update({k: v for k, v in extensions.items() if v})
    return op


def _request_body(spec: ActionSpec, body_props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    body_schema: dict[str, Any] = {
        "type": "object",
        "properties": body_props,
        "additionalProperties": spec.additional_params,
    }
    if required:
        body_schema["required"] = required
    content: dict[str, Any] = {"schema": body_schema}
    if spec.examples:
        content["examples"] = {
            f"example{i}": {"summary": ex.get("description", f"example {i}"), "value": ex.get("params", {})}
            for i, ex in enumerate(spec.examples)
        }
    return {"required": bool(required), "content": {"application/json": content}}


def _query_parameters(params: list[ParamDecl], body_props: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameters of a method without a body go in the query string (objects cannot)."""
    out: list[dict[str, Any]] = []
    for p in params:
        if p.schema["type"] in ("object", ["object", "null"]):
            continue
        entry: dict[str, Any] = {"name": p.name, "in": "query", "required": p.required, "schema": body_props[p.name]}
        if "array" in p.schema["type"]:
            entry.update(style="form", explode=True)
        out.append(entry)
    return out


def _route_operations(app: Flask) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in SKIPPED_ENDPOINTS:
            continue
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        if not methods:
            continue
        url = _RULE_PARAM.sub(lambda m: "{" + m.group(2) + "}", rule.rule)
        parameters = [
            {
                "name": m.group(2),
                "in": "path",
                "required": True,
                "schema": dict(_CONVERTER_SCHEMAS.get(m.group(1) or "", {"type": "string"})),
            }
            for m in _RULE_PARAM.finditer(rule.rule)
        ]
        view = app.view_functions.get(rule.endpoint)
        extra = getattr(view, "__keel_openapi__", None)  # a dict, or a @protect'ed route's builder
        if extra is False:
            continue
        tag, name = route_tag(rule.endpoint), rule.endpoint.rpartition(".")[2]
        summary = summary_of(getattr(view, "__doc__", None), name.replace("_", " ").capitalize())
        for method in methods:
            op: dict[str, Any] = {
                "operationId": re.sub(r"\W", "_", f"{tag}_{name}_{method.lower()}"),
                "tags": [tag],
                "summary": summary,
                "responses": {"200": {"description": "OK"}, "default": ERROR_REF},
            }
            if rule.endpoint in PUBLIC_ENDPOINTS:
                op["security"] = []
            else:
                op["security"] = [{"bearerAuth": []}, {"apiKey": []}, {}]
            if parameters:
                op["parameters"] = parameters
            if callable(extra):
                op.update(extra(method, parameters))
            elif extra:
                op.update(extra)
            paths.setdefault(url, {})[method.lower()] = op
    return paths


def build_openapi(registry: Registry, app: Flask, version: str) -> dict[str, Any]:
    paths = _route_operations(app)
    for action in registry.actions.values():
        url, operations = _action_operations(action)
        paths.setdefault(url, {}).update(operations)
    # Swagger UI shows the groups in this order: the modules by name, then the framework's routes.
    used = {tag for ops in paths.values() for op in ops.values() for tag in op["tags"]}
    tags: list[dict[str, str]] = [{"name": t} for t in sorted(used - {FRAMEWORK_TAG})]
    if FRAMEWORK_TAG in used:
        tags.append({"name": FRAMEWORK_TAG, "description": "The framework's routes: health, metrics, this description"})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keel API",
            "version": version,
            "description": "Actions declared in YAML and the framework's routes. Errors use one shape: "
            '{"success": false, "error": {"code", "message", "details"}, "request_id"}.',
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": _components(),
    }
