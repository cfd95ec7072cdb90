"""The action file format, version 1 (SPEC §4.1), checked node by node.

:func:`check_document` walks the tree built by :mod:`core.actions.yamlsafe` and returns
:class:`ActionSpec` objects (plain data) plus every :class:`Problem` found, each with the line
and column of the offending node and its key path (``actions.create_task.params.priority.type``).
The checks are table-driven: :data:`ACTION_TABLE` holds one checker per key of an action and
:data:`KEYWORDS` one per keyword of a parameter schema (with the types and levels it applies
to); the loops walk the tables in order. Nothing here imports or calls a handler: handler names
are checked through a ``resolver`` callback supplied by the caller.
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
ACTION_KEYS = (  # as listed in errors; checked in the order of ACTION_TABLE
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
PARAM_KEYS = (  # as listed in errors; checked in the order of KEYWORDS
    "type",
    "nullable",
    "enum",
    "description",
    "required",
    "default",
    "secret",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "minItems",
    "maxItems",
    "properties",
)
LEVELS = ("param", "property", "items")
"""Where a parameter schema appears: a parameter, a property of an object, an array's items."""
GROUP_TYPES: dict[str, tuple[str, ...]] = {  # keywords that apply to some types only
    "strings": ("string",),
    "numbers": ("integer", "number"),
    "arrays": ("array",),
    "objects": ("object",),
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
    _check_version(c, root, top)
    module = _check_module(c, top, implied_module)
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


def file_module(root: Node | None, implied: str | None) -> str | None:
    """The module a file belongs to: the one it declares at the top (``module:``), else the one
    implied by where it is (a module's own ``actions.yaml``); ``None`` when neither."""
    if root is not None and root.kind == "map":
        entry = root.value.get("module")
        if entry is not None and entry[1].kind == "scalar" and isinstance(entry[1].value, str):
            declared = entry[1].value
            if MODULE_RE.match(declared):
                return declared
    return implied


def _check_version(c: _Checker, root: Node, top: dict[str, tuple[Node, Node]]) -> None:
    if "version" not in top:
        c.error(root, "version", "required key missing: add 'version: 1' at the top")
        return
    vnode = top["version"][1]
    if vnode.kind != "scalar" or vnode.value != 1 or isinstance(vnode.value, bool):
        c.error(vnode, "version", f"unsupported version {_describe(vnode)}; this Keel reads version 1")


def _check_module(c: _Checker, top: dict[str, tuple[Node, Node]], implied: str | None) -> str | None:
    """The file's module: the one it belongs to (a module's own file) or the one it declares."""
    if "module" not in top:
        return implied
    mnode = top["module"][1]
    declared = c.string(mnode, "module", MODULE_RE, "a module name is lowercase letters, digits and _")
    if declared is None:
        return implied
    if implied is not None and declared != implied:
        c.error(mnode, "module", f"this file belongs to module {implied!r}; remove 'module' or set it to {implied!r}")
    return declared


# --- an action: one checker per key, walked in the order of ACTION_TABLE ----------------------


class _Action:
    """One action being checked and the fields gathered for its :class:`ActionSpec`."""

    __slots__ = (
        "c",
        "fields",
        "handler_module",
        "key",
        "method",
        "module",
        "node",
        "param_nodes",
        "params",
        "path_params",
        "resolver",
    )

    def __init__(
        self,
        c: _Checker,
        node: Node,
        key: str,
        module: str | None,
        resolver: Resolver,
    ) -> None:
        self.c = c
        self.node = node
        self.key = key
        self.module = module
        self.resolver = resolver
        self.fields: dict[str, Any] = {}
        self.handler_module = module  # the handler's module: the file's, or the one in 'module.method'
        self.method = ""
        self.path_params: list[tuple[str, str]] = []
        self.params: dict[str, ParamDecl] = {}
        self.param_nodes: dict[str, Node] = {}

    def at(self, kw: str) -> str:
        return f"{self.key}.{kw}"


ActionCheck = Callable[[_Action, str, Node], None]


@dataclass(frozen=True)
class ActionKey:
    """How one key of an action is checked: ``check`` when present, ``absent`` when not."""

    check: ActionCheck
    absent: Callable[[_Action], None] | None = None


def _check_action(
    c: _Checker, name: str, knode: Node, node: Node, key: str, module: str | None, resolver: Resolver
) -> ActionSpec | None:
    items = c.mapping(node, key)
    if items is None:
        return None
    before = len(c.problems)
    c.keys(items, ACTION_KEYS, key, f"action {name!r}")
    a = _Action(c, node, key, module, resolver)
    for kw, rule in ACTION_TABLE.items():
        entry = items.get(kw)
        if entry is not None:
            rule.check(a, kw, entry[1])
        elif rule.absent is not None:
            rule.absent(a)
    if len(c.problems) > before or a.handler_module is None:
        return None
    return ActionSpec(
        name=name,
        module=a.handler_module,
        method=a.method,
        line=knode.line,
        col=knode.col,
        path_params=tuple(a.path_params),
        params=a.params,
        **{k: v for k, v in a.fields.items() if v is not None},
    )


def _action_handler(a: _Action, kw: str, node: Node) -> None:
    h = a.c.string(node, a.at(kw), HANDLER_RE, "write 'method' or 'module.method'")
    if h is None:
        return
    m = HANDLER_RE.match(h)
    assert m is not None
    a.handler_module = m.group(1) or a.module
    a.method = m.group(2)
    if a.handler_module is None:
        a.c.error(node, a.at(kw), "no module: add 'module: <name>' at the top of the file or write 'module.method'")
        return
    reason = a.resolver(a.handler_module, a.method)
    if reason is not None:
        a.c.error(node, a.at(kw), reason)


def _action_handler_missing(a: _Action) -> None:
    a.c.error(a.node, a.at("handler"), "required key missing: name an @action method of the module")


def _action_string(a: _Action, kw: str, node: Node) -> None:
    a.fields[kw] = a.c.string(node, a.at(kw))


def _action_methods(a: _Action, kw: str, node: Node) -> None:
    methods = a.c.strings(node, a.at(kw), choices=METHODS)
    if methods is not None and not methods:
        a.c.error(node, a.at(kw), f"must list at least one of {', '.join(METHODS)}")
    a.fields[kw] = methods


def _action_auth(a: _Action, kw: str, node: Node) -> None:
    auth = a.c.string(node, a.at(kw))
    if auth is not None and auth not in AUTH_MODES:
        a.c.error(node, a.at(kw), f"{auth!r} is not one of {', '.join(AUTH_MODES)}{suggest(auth, AUTH_MODES)}")
    a.fields[kw] = auth


def _action_strings(a: _Action, kw: str, node: Node) -> None:
    a.fields[kw] = a.c.strings(node, a.at(kw))


def _action_rate_limit(a: _Action, kw: str, node: Node) -> None:
    limit = a.c.string(node, a.at(kw))
    if limit is None:
        return
    try:
        a.fields[kw] = check_limit(limit)
    except ValueError as exc:
        a.c.error(node, a.at(kw), f"{limit!r} is not {exc}")


def _action_flag(a: _Action, kw: str, node: Node) -> None:
    a.fields[kw] = a.c.boolean(node, a.at(kw))


def _action_returns(a: _Action, kw: str, node: Node) -> None:
    if a.c.mapping(node, a.at(kw)) is not None:
        a.fields[kw] = plain(node)


def _action_path(a: _Action, kw: str, node: Node) -> None:
    path = a.c.string(node, a.at(kw))
    if path is None:
        return
    parsed = _check_path(a.c, node, a.at(kw), path)
    if parsed is not None:
        a.path_params = parsed
        a.fields[kw] = path


def _action_params(a: _Action, kw: str, node: Node) -> None:
    pmap = a.c.mapping(node, a.at(kw))
    if pmap is not None:
        for pname, (pk, pv) in pmap.items():
            pkey = f"{a.key}.params.{pname}"
            if not PARAM_RE.match(pname):
                a.c.error(pk, pkey, f"parameter name {pname!r} is not valid: use letters, digits and _ (at most 64)")
                continue
            decl = _check_param(a.c, pname, pv, pkey, "param")
            if decl is not None:
                a.params[pname] = decl
                a.param_nodes[pname] = pv
    _action_path_params(a)


def _action_path_params(a: _Action) -> None:
    """The path's ``<converter:name>`` parameters: required, typed by their converter."""
    for pname, conv in a.path_params:
        ptype = CONVERTERS[conv][0]
        declared = a.params.get(pname)
        if declared is None:
            schema: dict[str, Any] = {"type": ptype}
            if conv == "uuid":
                schema["format"] = "uuid"
            a.params[pname] = ParamDecl(pname, schema, True, in_path=True)
            continue
        if declared.schema["type"] != ptype:
            a.c.error(
                a.param_nodes[pname],
                f"{a.key}.params.{pname}.type",
                f"path parameter <{conv}:{pname}> is of type {ptype}; declare type: {ptype}",
            )
        a.params[pname] = ParamDecl(pname, declared.schema, True, None, False, declared.secret, True)


def _action_examples(a: _Action, kw: str, node: Node) -> None:
    a.fields[kw] = _check_examples(a.c, node, a.at(kw))


ACTION_TABLE: dict[str, ActionKey] = {  # in checking order
    "handler": ActionKey(_action_handler, absent=_action_handler_missing),
    "description": ActionKey(_action_string),
    "methods": ActionKey(_action_methods),
    "auth": ActionKey(_action_auth),
    "roles": ActionKey(_action_strings),
    "scopes": ActionKey(_action_strings),
    "rate_limit": ActionKey(_action_rate_limit),
    "additional_params": ActionKey(_action_flag),
    "deprecated": ActionKey(_action_flag),
    "returns": ActionKey(_action_returns),
    "path": ActionKey(_action_path),
    "params": ActionKey(_action_params, absent=_action_path_params),  # after path: it adds path parameters
    "examples": ActionKey(_action_examples),
}


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


# --- a parameter schema: one checker per keyword, walked stage by stage -----------------------


class _Param:
    """One parameter (or property, or ``items``) being checked and the schema built from it."""

    __slots__ = ("c", "default", "flags", "items", "key", "level", "name", "schema", "type")

    def __init__(self, c: _Checker, name: str, key: str, level: str, items: dict[str, tuple[Node, Node]]) -> None:
        self.c = c
        self.name = name
        self.key = key
        self.level = level
        self.items = items
        self.type = ""  # set by the 'type' keyword, which every other keyword depends on
        self.schema: dict[str, Any] = {}  # normalised JSON Schema, in keyword order
        self.flags: dict[str, bool] = {}  # nullable, required, secret
        self.default: Any = None

    def at(self, kw: str) -> str:
        return f"{self.key}.{kw}"


ParamCheck = Callable[[_Param, str, Node], None]


@dataclass(frozen=True)
class Keyword:
    """One keyword of a parameter schema: its checker, the stage it is checked in, the types
    it applies to (``group``, a key of :data:`GROUP_TYPES`; ``None``: every type) and the
    levels it may appear at."""

    check: ParamCheck
    stage: int
    group: str | None = None
    levels: tuple[str, ...] = LEVELS

    def applies(self, t: str) -> bool:
        return self.group is None or t in GROUP_TYPES[self.group]


def _check_param(c: _Checker, name: str, node: Node, key: str, level: str) -> ParamDecl | None:
    """``level``: ``param`` (top level), ``property`` (in ``properties``) or ``items``.

    Every keyword is first checked for being known and allowed at this level, then ``type``
    (nothing else means anything without it) and the keywords that do not apply to it; then
    each stage of :data:`STAGES` runs its keywords in table order. A gated stage stops the
    check when anything so far was wrong: ``enum`` values and the ``default`` are checked
    against the schema built so far, which must then be sound.
    """
    items = c.mapping(node, key)
    if items is None:
        return None
    before = len(c.problems)
    p = _Param(c, name, key, level, items)
    _check_allowed(p)
    if "type" not in items:
        c.error(node, p.at("type"), f"required key missing: one of {', '.join(TYPES)}")
        return None
    KEYWORDS["type"].check(p, "type", items["type"][1])
    if not p.type:
        return None
    _check_applicable(p)
    present = items.keys()
    for names, keywords, after, gated in STAGES[p.type]:
        if not names.isdisjoint(present):
            for kw, check in keywords:
                entry = items.get(kw)
                if entry is not None:
                    check(p, kw, entry[1])
        if after is not None:
            after(p)
        if gated and len(c.problems) > before:
            return None
    flags = p.flags
    return ParamDecl(
        name, p.schema, flags.get("required", False), p.default, "default" in items, flags.get("secret", False)
    )


def _check_allowed(p: _Param) -> None:
    allowed = ALLOWED_AT[p.level]
    for kw, (knode, _) in p.items.items():
        if kw in allowed:
            continue
        if kw in KEYWORDS:
            p.c.error(knode, p.at(kw), f"{kw!r} is only allowed on a parameter, not inside {p.level}")
        else:
            p.c.error(knode, p.at(kw), f"unknown keyword{suggest(kw, allowed)}; allowed: {', '.join(allowed)}")


def _check_applicable(p: _Param) -> None:
    for kw, (knode, _) in p.items.items():
        keyword = KEYWORDS.get(kw)
        if keyword is not None and not keyword.applies(p.type):
            p.c.error(knode, p.at(kw), f"{kw!r} applies to {keyword.group}, not to type {p.type}")


def _kw_type(p: _Param, kw: str, node: Node) -> None:
    t = p.c.string(node, p.at(kw))
    if t is None:
        return
    if t not in TYPES:
        hint = f" (did you mean {TYPE_ALIASES[t]!r}?)" if t in TYPE_ALIASES else suggest(t, TYPES)
        p.c.error(node, p.at(kw), f"{t!r} is not one of {', '.join(TYPES)}{hint}")
        return
    p.type = t
    p.schema["type"] = t


def _kw_flag(p: _Param, kw: str, node: Node) -> None:
    p.flags[kw] = bool(p.c.boolean(node, p.at(kw)))


def _kw_nullable(p: _Param, kw: str, node: Node) -> None:
    _kw_flag(p, kw, node)
    if p.flags[kw]:
        p.schema["type"] = [p.type, "null"]


def _kw_description(p: _Param, kw: str, node: Node) -> None:
    desc = p.c.string(node, p.at(kw))
    if desc is not None:
        p.schema[kw] = desc


def _kw_number(p: _Param, kw: str, node: Node) -> None:
    v = p.c.number(node, p.at(kw))
    if v is not None:
        p.schema[kw] = v


def _kw_count(p: _Param, kw: str, node: Node) -> None:
    n = p.c.count(node, p.at(kw))
    if n is not None:
        p.schema[kw] = n


def _kw_pattern(p: _Param, kw: str, node: Node) -> None:
    pattern = p.c.string(node, p.at(kw))
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        p.c.error(node, p.at(kw), f"invalid regular expression {pattern!r}: {exc}")
    else:
        p.schema[kw] = pattern


def _kw_format(p: _Param, kw: str, node: Node) -> None:
    fmt = p.c.string(node, p.at(kw))
    if fmt is None:
        return
    if fmt not in FORMATS:
        p.c.error(node, p.at(kw), f"{fmt!r} is not one of {', '.join(FORMATS)}{suggest(fmt, FORMATS)}")
    else:
        p.schema[kw] = fmt


def _check_bounds(p: _Param) -> None:
    """Lower bounds not above upper ones (after every bound is read)."""
    schema = p.schema
    for lo, hi in (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems")):
        if lo in schema and hi in schema and schema[lo] > schema[hi]:
            p.c.error(p.items[lo][1], p.at(lo), f"{lo} {schema[lo]} is greater than {hi} {schema[hi]}")
    lo, hi = "exclusiveMinimum", "exclusiveMaximum"
    if lo in schema and hi in schema and schema[lo] >= schema[hi]:
        p.c.error(p.items[lo][1], p.at(lo), "exclusiveMinimum must be less than exclusiveMaximum")


def _kw_items(p: _Param, kw: str, node: Node) -> None:
    sub = _check_param(p.c, f"{p.name}[]", node, p.at(kw), "items")
    if sub is not None:
        p.schema[kw] = sub.schema


def _kw_properties(p: _Param, kw: str, node: Node) -> None:
    props = p.c.mapping(node, p.at(kw))
    if props is None:
        return
    out: dict[str, Any] = {}
    required: list[str] = []
    for pname, (_pk, pv) in props.items():
        sub = _check_param(p.c, pname, pv, f"{p.at(kw)}.{pname}", "property")
        if sub is not None:
            out[pname] = sub.schema
            if sub.required:
                required.append(pname)
    p.schema[kw] = out
    if required:
        p.schema["required"] = required


def _kw_enum(p: _Param, kw: str, node: Node) -> None:
    if node.kind != "seq" or not node.value:
        p.c.error(node, p.at(kw), f"must be a non-empty list, got {_describe(node)}")
        return
    check = compile_check(p.schema)
    values: list[Any] = []
    for i, vnode in enumerate(node.value):
        value = plain(vnode)
        errors = check(value)
        if errors:
            where, msg = errors[0]
            p.c.error(vnode, f"{p.at(kw)}[{i}]", f"enum value{where} {msg}")
        elif value in values:
            p.c.error(vnode, f"{p.at(kw)}[{i}]", "is listed twice")
        else:
            values.append(value)
    p.schema[kw] = values


def _kw_default(p: _Param, kw: str, node: Node) -> None:
    p.default = default = plain(node)
    if p.flags.get("required"):
        p.c.error(node, p.at(kw), "a required parameter cannot have a default; remove one of them")
    errors = compile_check(p.schema)(default)
    if errors:
        where, msg = errors[0]
        p.c.error(node, p.at(kw), f"default violates the parameter's own schema: default{where} {msg}")


KEYWORDS: dict[str, Keyword] = {  # in checking order (the schema's keys come out in this order)
    "type": Keyword(_kw_type, 0),
    "nullable": Keyword(_kw_nullable, 1),
    "required": Keyword(_kw_flag, 1, levels=("param", "property")),
    "secret": Keyword(_kw_flag, 1, levels=("param",)),
    "description": Keyword(_kw_description, 1),
    "minimum": Keyword(_kw_number, 1, "numbers"),
    "maximum": Keyword(_kw_number, 1, "numbers"),
    "exclusiveMinimum": Keyword(_kw_number, 1, "numbers"),
    "exclusiveMaximum": Keyword(_kw_number, 1, "numbers"),
    "minLength": Keyword(_kw_count, 1, "strings"),
    "maxLength": Keyword(_kw_count, 1, "strings"),
    "minItems": Keyword(_kw_count, 1, "arrays"),
    "maxItems": Keyword(_kw_count, 1, "arrays"),
    "pattern": Keyword(_kw_pattern, 1, "strings"),
    "format": Keyword(_kw_format, 1, "strings"),
    "items": Keyword(_kw_items, 2, "arrays"),
    "properties": Keyword(_kw_properties, 2, "objects"),
    "enum": Keyword(_kw_enum, 3),
    "default": Keyword(_kw_default, 4, levels=("param",)),
}
ALLOWED_AT: dict[str, tuple[str, ...]] = {
    level: tuple(kw for kw in PARAM_KEYS if level in KEYWORDS[kw].levels) for level in LEVELS
}
Stage = tuple[frozenset[str], tuple[tuple[str, ParamCheck], ...], Callable[[_Param], None] | None, bool]
_STAGE_PLAN: tuple[tuple[int, Callable[[_Param], None] | None, bool], ...] = (
    (1, _check_bounds, False),  # the scalar keywords, then the bounds against each other
    (2, None, True),  # items and properties, recursively
    (3, None, True),  # enum values against the schema so far
    (4, None, True),  # the default against the whole schema
)


def _stage(t: str, stage: int, after: Callable[[_Param], None] | None, gated: bool) -> Stage:
    keywords = tuple((kw, k.check) for kw, k in KEYWORDS.items() if k.stage == stage and k.applies(t))
    return frozenset(kw for kw, _ in keywords), keywords, after, gated


STAGES: dict[str, tuple[Stage, ...]] = {  # by type: the keywords that apply to it, stage by stage
    t: tuple(_stage(t, stage, after, gated) for stage, after, gated in _STAGE_PLAN) for t in TYPES
}
