"""The action file format, version 1 (SPEC §4.1), checked node by node.

:func:`check_document` walks the tree built by :mod:`core.actions.yamlsafe` and returns
:class:`ActionSpec` objects (plain data) plus every :class:`Problem` found, each with the line
and column of the offending node and its key path (``actions.create_task.params.priority.type``).
Nothing here imports or calls a handler: handler names are checked through a ``resolver``
callback supplied by the caller.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from config.schema import check_limit
from core.actions.params import FORMATS, TYPES, compile_check
from core.actions.yamlsafe import Node, Problem, plain

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MODULE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
HANDLER_RE = re.compile(r"^(?:([a-z][a-z0-9_]*)\.)?([A-Za-z_][A-Za-z0-9_]*)$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
PATH_PARAM_RE = re.compile(r"^<(?:([A-Za-z_]+):)?([A-Za-z_][A-Za-z0-9_]*)>$")

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_METHODS = ("GET", "POST")
AUTH_MODES = ("public", "user", "api_key", "any")
CONVERTERS: dict[str, tuple[str, str]] = {  # converter -> (param type, regex)
    "string": ("string", r"[^/]+"),
    "int": ("integer", r"\d{1,18}"),
    "float": ("number", r"\d{1,18}(?:\.\d{1,18})?"),
    "uuid": ("string", r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"),
}

TOP_KEYS = ("version", "module", "actions")
ACTION_KEYS = (
    "handler",
    "description",
    "methods",
    "path",
    "auth",
    "roles",
    "scopes",
    "rate_limit",
    "params",
    "additional_params",
    "returns",
    "examples",
    "deprecated",
)
EXAMPLE_KEYS = ("description", "params")
STRING_KW = ("minLength", "maxLength", "pattern", "format")
NUMBER_KW = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
ARRAY_KW = ("items", "minItems", "maxItems")
OBJECT_KW = ("properties",)
COMMON_KW = ("type", "nullable", "enum", "description")
PARAM_ONLY_KW = ("required", "default", "secret")
PARAM_KEYS = COMMON_KW + PARAM_ONLY_KW + NUMBER_KW + STRING_KW + ARRAY_KW + OBJECT_KW
KW_FOR_TYPE = {
    "string": STRING_KW,
    "integer": NUMBER_KW,
    "number": NUMBER_KW,
    "array": ARRAY_KW,
    "object": OBJECT_KW,
    "boolean": (),
}
TYPE_ALIASES = {
    "int": "integer",
    "str": "string",
    "bool": "boolean",
    "float": "number",
    "list": "array",
    "dict": "object",
}

Resolver = Callable[[str, str], str | None]
"""``resolver(module, method)`` → ``None`` when the handler exists, else the reason."""


@dataclass(frozen=True)
class ParamDecl:
    name: str
    schema: dict[str, Any]  # normalised JSON Schema (type may be [t, "null"])
    required: bool = False
    default: Any = None
    has_default: bool = False
    secret: bool = False
    in_path: bool = False


@dataclass(frozen=True)
class ActionSpec:
    name: str
    module: str
    method: str
    line: int
    col: int
    description: str = ""
    methods: tuple[str, ...] = DEFAULT_METHODS
    path: str | None = None
    path_params: tuple[tuple[str, str], ...] = ()  # (name, converter)
    auth: str = "any"
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    rate_limit: str | None = None
    params: dict[str, ParamDecl] = field(default_factory=dict)
    additional_params: bool = False
    returns: dict[str, Any] | None = None
    examples: tuple[dict[str, Any], ...] = ()
    deprecated: bool = False


_KIND_NAMES = {"map": "a mapping", "seq": "a list"}


def _describe(node: Node) -> str:
    if node.kind != "scalar":
        return _KIND_NAMES[node.kind]
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, int):
        return f"integer {v}"
    if isinstance(v, float):
        return f"number {v}"
    return f"string {v!r}"


def suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, node: Node, key: str, message: str) -> None:
        self.problems.append(Problem(node.line, node.col, key, message))

    # -- typed getters: return None (and record a problem) when the node is not of the type --
    def mapping(self, node: Node, key: str) -> dict[str, tuple[Node, Node]] | None:
        if node.kind != "map":
            self.error(node, key, f"must be a mapping, got {_describe(node)}")
            return None
        items: dict[str, tuple[Node, Node]] = node.value
        return items

    def keys(self, items: dict[str, tuple[Node, Node]], allowed: tuple[str, ...], key: str, what: str) -> None:
        for name, (knode, _) in items.items():
            if name not in allowed:
                self.error(
                    knode,
                    _join(key, name),
                    f"unknown key in {what}{suggest(name, allowed)}; allowed: {', '.join(allowed)}",
                )

    def string(self, node: Node, key: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str | None:
        if node.kind != "scalar" or not isinstance(node.value, str):
            self.error(node, key, f"must be a string, got {_describe(node)}")
            return None
        if pattern is not None and not pattern.match(node.value):
            self.error(node, key, f"{node.value!r} is not valid: {hint}")
            return None
        return str(node.value)

    def boolean(self, node: Node, key: str) -> bool | None:
        if node.kind != "scalar" or not isinstance(node.value, bool):
            self.error(node, key, f"must be true or false, got {_describe(node)}")
            return None
        return bool(node.value)

    def number(self, node: Node, key: str) -> float | int | None:
        v = node.value
        if node.kind != "scalar" or isinstance(v, bool) or not isinstance(v, (int, float)):
            self.error(node, key, f"must be a number, got {_describe(node)}")
            return None
        return v

    def count(self, node: Node, key: str) -> int | None:
        v = node.value
        if node.kind != "scalar" or isinstance(v, bool) or not isinstance(v, int) or v < 0:
            self.error(node, key, f"must be a whole number >= 0, got {_describe(node)}")
            return None
        return int(v)

    def strings(self, node: Node, key: str, *, choices: tuple[str, ...] = ()) -> tuple[str, ...] | None:
        if node.kind != "seq":
            self.error(node, key, f"must be a list of strings, got {_describe(node)}")
            return None
        out: list[str] = []
        ok = True
        for i, item in enumerate(node.value):
            sub = f"{key}[{i}]"
            s = self.string(item, sub)
            if s is None:
                ok = False
                continue
            if not s.strip():
                self.error(item, sub, "must not be empty")
                ok = False
                continue
            if choices and s not in choices:
                self.error(item, sub, f"{s!r} is not one of {', '.join(choices)}{suggest(s, choices)}")
                ok = False
                continue
            if s in out:
                self.error(item, sub, f"{s!r} is listed twice")
                ok = False
                continue
            out.append(s)
        return tuple(out) if ok else None


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def check_document(
    root: Node | None, *, implied_module: str | None, resolver: Resolver
) -> tuple[list[ActionSpec], list[Problem]]:
    """Check a whole file. Returns its actions and every problem found."""
    c = _Checker()
    if root is None:
        return [], [Problem(1, 1, "file", "is empty (expected a mapping with 'version' and 'actions')")]
    top = c.mapping(root, "(top level)")
    if top is None:
        return [], c.problems
    c.keys(top, TOP_KEYS, "", "the top level")
    if "version" not in top:
        c.error(root, "version", "required key missing: add 'version: 1' at the top")
    else:
        vnode = top["version"][1]
        if vnode.kind != "scalar" or vnode.value != 1 or isinstance(vnode.value, bool):
            c.error(vnode, "version", f"unsupported version {_describe(vnode)}; this Keel reads version 1")
    module = implied_module
    if "module" in top:
        mnode = top["module"][1]
        declared = c.string(mnode, "module", MODULE_RE, "a module name is lowercase letters, digits and _")
        if declared is not None:
            if implied_module is not None and declared != implied_module:
                c.error(
                    mnode,
                    "module",
                    f"this file belongs to module {implied_module!r}; remove 'module' or set it to {implied_module!r}",
                )
            module = declared
    specs: list[ActionSpec] = []
    if "actions" not in top:
        c.error(root, "actions", "required key missing: add an 'actions:' mapping")
        return specs, c.problems
    actions = c.mapping(top["actions"][1], "actions")
    if actions is None:
        return specs, c.problems
    for name, (knode, vnode) in actions.items():
        key = f"actions.{name}"
        if not NAME_RE.match(name):
            c.error(
                knode, key, f"action name {name!r} is not valid: use ^[a-z][a-z0-9_]{{0,63}}$ (lowercase, digits, _)"
            )
            continue
        spec = _check_action(c, name, knode, vnode, key, module, resolver)
        if spec is not None:
            specs.append(spec)
    return specs, c.problems


def _check_action(
    c: _Checker, name: str, knode: Node, node: Node, key: str, module: str | None, resolver: Resolver
) -> ActionSpec | None:
    items = c.mapping(node, key)
    if items is None:
        return None
    before = len(c.problems)
    c.keys(items, ACTION_KEYS, key, f"action {name!r}")
    fields: dict[str, Any] = {}

    # handler
    handler_module, method = module, ""
    if "handler" not in items:
        c.error(node, f"{key}.handler", "required key missing: name an @action method of the module")
    else:
        hnode = items["handler"][1]
        h = c.string(hnode, f"{key}.handler", HANDLER_RE, "write 'method' or 'module.method'")
        if h is not None:
            m = HANDLER_RE.match(h)
            assert m is not None
            handler_module = m.group(1) or module
            method = m.group(2)
            if handler_module is None:
                c.error(
                    hnode,
                    f"{key}.handler",
                    "no module: add 'module: <name>' at the top of the file or write 'module.method'",
                )
            else:
                reason = resolver(handler_module, method)
                if reason is not None:
                    c.error(hnode, f"{key}.handler", reason)

    if "description" in items:
        fields["description"] = c.string(items["description"][1], f"{key}.description")
    if "methods" in items:
        mnode = items["methods"][1]
        methods = c.strings(mnode, f"{key}.methods", choices=METHODS)
        if methods is not None and not methods:
            c.error(mnode, f"{key}.methods", f"must list at least one of {', '.join(METHODS)}")
        fields["methods"] = methods
    if "auth" in items:
        anode = items["auth"][1]
        auth = c.string(anode, f"{key}.auth")
        if auth is not None and auth not in AUTH_MODES:
            c.error(anode, f"{key}.auth", f"{auth!r} is not one of {', '.join(AUTH_MODES)}{suggest(auth, AUTH_MODES)}")
        fields["auth"] = auth
    for list_key in ("roles", "scopes"):
        if list_key in items:
            fields[list_key] = c.strings(items[list_key][1], f"{key}.{list_key}")
    if "rate_limit" in items:
        rnode = items["rate_limit"][1]
        limit = c.string(rnode, f"{key}.rate_limit")
        if limit is not None:
            try:
                fields["rate_limit"] = check_limit(limit)
            except ValueError as exc:
                c.error(rnode, f"{key}.rate_limit", f"{limit!r} is not {exc}")
    for flag in ("additional_params", "deprecated"):
        if flag in items:
            fields[flag] = c.boolean(items[flag][1], f"{key}.{flag}")
    if "returns" in items:
        rnode = items["returns"][1]
        if c.mapping(rnode, f"{key}.returns") is not None:
            fields["returns"] = plain(rnode)

    path_params: list[tuple[str, str]] = []
    if "path" in items:
        pnode = items["path"][1]
        path = c.string(pnode, f"{key}.path")
        if path is not None:
            parsed = _check_path(c, pnode, f"{key}.path", path)
            if parsed is not None:
                path_params = parsed
                fields["path"] = path

    params: dict[str, ParamDecl] = {}
    param_nodes: dict[str, Node] = {}
    if "params" in items:
        pmap = c.mapping(items["params"][1], f"{key}.params")
        if pmap is not None:
            for pname, (pk, pv) in pmap.items():
                pkey = f"{key}.params.{pname}"
                if not PARAM_RE.match(pname):
                    c.error(pk, pkey, f"parameter name {pname!r} is not valid: use letters, digits and _ (at most 64)")
                    continue
                decl = _check_param(c, pname, pv, pkey, "param")
                if decl is not None:
                    params[pname] = decl
                    param_nodes[pname] = pv
    for pname, conv in path_params:
        ptype = CONVERTERS[conv][0]
        if pname in params:
            declared = params[pname]
            dtype = declared.schema["type"]
            if dtype != ptype:
                c.error(
                    param_nodes[pname],
                    f"{key}.params.{pname}.type",
                    f"path parameter <{conv}:{pname}> is of type {ptype}; declare type: {ptype}",
                )
            params[pname] = ParamDecl(pname, declared.schema, True, None, False, declared.secret, True)
        else:
            schema: dict[str, Any] = {"type": ptype}
            if conv == "uuid":
                schema["format"] = "uuid"
            params[pname] = ParamDecl(pname, schema, True, in_path=True)

    if "examples" in items:
        fields["examples"] = _check_examples(c, items["examples"][1], f"{key}.examples")

    if len(c.problems) > before or handler_module is None:
        return None
    return ActionSpec(
        name=name,
        module=handler_module,
        method=method,
        line=knode.line,
        col=knode.col,
        path_params=tuple(path_params),
        params=params,
        **{k: v for k, v in fields.items() if v is not None},
    )


def _check_path(c: _Checker, node: Node, key: str, path: str) -> list[tuple[str, str]] | None:
    if path.startswith("/") or path.endswith("/"):
        c.error(node, key, f"{path!r}: write the path without a leading or trailing '/' (e.g. \"<int:id>\")")
        return None
    out: list[tuple[str, str]] = []
    ok = True
    for segment in path.split("/"):
        m = PATH_PARAM_RE.match(segment)
        if m is not None:
            conv = m.group(1) or "string"
            pname = m.group(2)
            if conv not in CONVERTERS:
                c.error(
                    node,
                    key,
                    f"converter {conv!r} in {segment!r} is not one of "
                    f"{', '.join(CONVERTERS)}{suggest(conv, tuple(CONVERTERS))}",
                )
                ok = False
            elif any(pname == n for n, _ in out):
                c.error(node, key, f"path parameter {pname!r} collides with another one of the same name in {path!r}")
                ok = False
            else:
                out.append((pname, conv))
        elif not SEGMENT_RE.match(segment):
            c.error(
                node,
                key,
                f"segment {segment!r} of {path!r} is neither a literal (letters, digits, ._~-) nor <converter:name>",
            )
            ok = False
    if ok and not out:
        c.error(node, key, f"{path!r} declares no <parameter>; remove 'path' or add one like <int:id>")
        ok = False
    return out if ok else None


def _check_param(c: _Checker, name: str, node: Node, key: str, level: str) -> ParamDecl | None:
    """``level``: ``param`` (top level), ``property`` (in ``properties``) or ``items``."""
    items = c.mapping(node, key)
    if items is None:
        return None
    before = len(c.problems)
    allowed: tuple[str, ...] = PARAM_KEYS
    if level == "items":
        allowed = tuple(k for k in PARAM_KEYS if k not in PARAM_ONLY_KW)
    elif level == "property":
        allowed = tuple(k for k in PARAM_KEYS if k not in ("default", "secret"))
    for kw, (knode, _) in items.items():
        if kw not in allowed:
            if kw in PARAM_KEYS:
                c.error(knode, f"{key}.{kw}", f"{kw!r} is only allowed on a parameter, not inside {level}")
            else:
                c.error(knode, f"{key}.{kw}", f"unknown keyword{suggest(kw, allowed)}; allowed: {', '.join(allowed)}")
    if "type" not in items:
        c.error(node, f"{key}.type", f"required key missing: one of {', '.join(TYPES)}")
        return None
    tnode = items["type"][1]
    t = c.string(tnode, f"{key}.type")
    if t is None:
        return None
    if t not in TYPES:
        hint = f" (did you mean {TYPE_ALIASES[t]!r}?)" if t in TYPE_ALIASES else suggest(t, TYPES)
        c.error(tnode, f"{key}.type", f"{t!r} is not one of {', '.join(TYPES)}{hint}")
        return None
    applicable = KW_FOR_TYPE[t]
    for kw, (knode, _) in items.items():
        for group, what in (
            (STRING_KW, "strings"),
            (NUMBER_KW, "numbers"),
            (ARRAY_KW, "arrays"),
            (OBJECT_KW, "objects"),
        ):
            if kw in group and kw not in applicable:
                c.error(knode, f"{key}.{kw}", f"{kw!r} applies to {what}, not to type {t}")

    schema: dict[str, Any] = {"type": t}
    flags: dict[str, bool] = {}
    for flag in ("nullable", "required", "secret"):
        if flag in items:
            value = c.boolean(items[flag][1], f"{key}.{flag}")
            flags[flag] = bool(value)
    if flags.get("nullable"):
        schema["type"] = [t, "null"]
    if "description" in items:
        desc = c.string(items["description"][1], f"{key}.description")
        if desc is not None:
            schema["description"] = desc
    for kw in NUMBER_KW:
        if kw in items and kw in applicable:
            v = c.number(items[kw][1], f"{key}.{kw}")
            if v is not None:
                schema[kw] = v
    for kw in ("minLength", "maxLength", "minItems", "maxItems"):
        if kw in items and kw in applicable:
            n = c.count(items[kw][1], f"{key}.{kw}")
            if n is not None:
                schema[kw] = n
    if "pattern" in items and "pattern" in applicable:
        pnode = items["pattern"][1]
        pattern = c.string(pnode, f"{key}.pattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                c.error(pnode, f"{key}.pattern", f"invalid regular expression {pattern!r}: {exc}")
            else:
                schema["pattern"] = pattern
    if "format" in items and "format" in applicable:
        fnode = items["format"][1]
        fmt = c.string(fnode, f"{key}.format")
        if fmt is not None:
            if fmt not in FORMATS:
                c.error(fnode, f"{key}.format", f"{fmt!r} is not one of {', '.join(FORMATS)}{suggest(fmt, FORMATS)}")
            else:
                schema["format"] = fmt
    for lo, hi in (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems")):
        if lo in schema and hi in schema and schema[lo] > schema[hi]:
            c.error(items[lo][1], f"{key}.{lo}", f"{lo} {schema[lo]} is greater than {hi} {schema[hi]}")
    if (
        "exclusiveMinimum" in schema
        and "exclusiveMaximum" in schema
        and schema["exclusiveMinimum"] >= schema["exclusiveMaximum"]
    ):
        c.error(
            items["exclusiveMinimum"][1],
            f"{key}.exclusiveMinimum",
            "exclusiveMinimum must be less than exclusiveMaximum",
        )
    if "items" in items and "items" in applicable:
        sub = _check_param(c, f"{name}[]", items["items"][1], f"{key}.items", "items")
        if sub is not None:
            schema["items"] = sub.schema
    if "properties" in items and "properties" in applicable:
        props = c.mapping(items["properties"][1], f"{key}.properties")
        if props is not None:
            out: dict[str, Any] = {}
            required: list[str] = []
            for pname, (_pk, pv) in props.items():
                sub = _check_param(c, pname, pv, f"{key}.properties.{pname}", "property")
                if sub is not None:
                    out[pname] = sub.schema
                    if sub.required:
                        required.append(pname)
            schema["properties"] = out
            if required:
                schema["required"] = required
    if len(c.problems) > before:
        return None
    if "enum" in items:
        enode = items["enum"][1]
        if enode.kind != "seq" or not enode.value:
            c.error(enode, f"{key}.enum", f"must be a non-empty list, got {_describe(enode)}")
        else:
            check = compile_check(schema)
            values: list[Any] = []
            for i, vnode in enumerate(enode.value):
                value = plain(vnode)
                errors = check(value)
                if errors:
                    where, msg = errors[0]
                    c.error(vnode, f"{key}.enum[{i}]", f"enum value{where} {msg}")
                elif value in values:
                    c.error(vnode, f"{key}.enum[{i}]", "is listed twice")
                else:
                    values.append(value)
            schema["enum"] = values
    if len(c.problems) > before:
        return None
    has_default = "default" in items
    default = None
    if has_default:
        dnode = items["default"][1]
        default = plain(dnode)
        if flags.get("required"):
            c.error(dnode, f"{key}.default", "a required parameter cannot have a default; remove one of them")
        errors = compile_check(schema)(default)
        if errors:
            where, msg = errors[0]
            c.error(dnode, f"{key}.default", f"default violates the parameter's own schema: default{where} {msg}")
    if len(c.problems) > before:
        return None
    return ParamDecl(name, schema, flags.get("required", False), default, has_default, flags.get("secret", False))


def _check_examples(c: _Checker, node: Node, key: str) -> tuple[dict[str, Any], ...] | None:
    if node.kind != "seq":
        c.error(node, key, f"must be a list of {{description, params}} mappings, got {_describe(node)}")
        return None
    out = []
    for i, item in enumerate(node.value):
        sub = f"{key}[{i}]"
        m = c.mapping(item, sub)
        if m is None:
            continue
        c.keys(m, EXAMPLE_KEYS, sub, "an example")
        if "description" in m:
            c.string(m["description"][1], f"{sub}.description")
        if "params" in m:
            c.mapping(m["params"][1], f"{sub}.params")
        out.append(plain(item))
    return tuple(out)
