"""Compiled actions and the immutable registry that serves them (DESIGN habit 3).

A :class:`Registry` is never changed after it is built: hot reload builds a new one and the
manager swaps a single attribute, so a request that read the old registry finishes with it and
no request ever sees half of two versions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.actions.params import Param, ParamSet
from core.actions.schema import CONVERTERS, ActionSpec, Resolver, check_document, file_module
from core.actions.yamlsafe import Problem, parse_tree, read_source
from core.auth.identity import Requirement

Handler = Callable[[dict[str, Any], Any], Any]
Binder = Callable[[str, str], Handler]
"""``binder(module, method)`` → the bound handler (only called after the resolver said yes)."""

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def display_path(path: Path) -> str:
    """Project-relative when the file is inside the project (the parent of ``core/``), else absolute."""
    absolute = path.absolute()  # not resolve(): a symlink is reported under the name it was found by
    try:
        return absolute.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(absolute)


@dataclass(frozen=True)
class CompiledAction:
    """Everything a request needs, computed once at load."""

    spec: ActionSpec
    file: str
    handler: Handler
    params: ParamSet
    requirement: Requirement
    methods: frozenset[str]
    allow: str
    path_regex: re.Pattern[str] | None
    path_params: tuple[tuple[str, str], ...]
    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def module(self) -> str:
        return self.spec.module

    def match_path(self, rest: str | None) -> dict[str, Any] | None:
        """Path parameters of ``/actions/<name>/<rest>``; ``None`` when it does not match."""
        if self.path_regex is None:
            return {} if rest is None else None
        if rest is None:
            return None
        m = self.path_regex.match(rest)
        if m is None:
            return None
        out: dict[str, Any] = {}
        for name, conv in self.path_params:
            raw = m.group(name)
            out[name] = int(raw) if conv == "int" else float(raw) if conv == "float" else raw
        return out


def _path_regex(path: str) -> re.Pattern[str]:
    parts = []
    for segment in path.split("/"):
        if segment.startswith("<"):
            conv, _, name = segment[1:-1].rpartition(":")
            parts.append(f"(?P<{name}>{CONVERTERS[conv or 'string'][1]})")
        else:
            parts.append(re.escape(segment))
    return re.compile("^" + "/".join(parts) + "$")


def public_metadata(spec: ActionSpec, file: str) -> dict[str, Any]:
    """What ``GET /actions`` shows (SPEC §4.5): secret defaults omitted."""
    params: dict[str, Any] = {}
    for p in spec.params.values():
        entry = dict(p.schema)
        entry["required"] = p.required
        if p.in_path:
            entry["in"] = "path"
        if p.secret:
            entry["secret"] = True
        elif p.has_default:
            entry["default"] = p.default
        params[p.name] = entry
    return {
        "name": spec.name,
        "module": spec.module,
        "description": spec.description,
        "methods": list(spec.methods),
        "path": spec.path,
        "auth": spec.auth,
        "roles": list(spec.roles),
        "scopes": list(spec.scopes),
        "rate_limit": spec.rate_limit,
        "params": params,
        "additional_params": spec.additional_params,
        "deprecated": spec.deprecated,
        "file": file,
    }


def compile_action(spec: ActionSpec, file: str, binder: Binder) -> CompiledAction:
    params = ParamSet(
        (Param(p.name, p.schema, p.required, p.default, p.has_default) for p in spec.params.values()),
        spec.additional_params,
    )
    return CompiledAction(
        spec=spec,
        file=file,
        handler=binder(spec.module, spec.method),
        params=params,
        requirement=Requirement(
            auth=spec.auth, roles=spec.roles, scopes=spec.scopes, rate_limit=spec.rate_limit, name=spec.name
        ),
        methods=frozenset(spec.methods),
        allow=", ".join(spec.methods),
        path_regex=_path_regex(spec.path) if spec.path else None,
        path_params=spec.path_params,
        metadata=public_metadata(spec, file),
    )


@dataclass(frozen=True)
class Source:
    """A file to load: where it is, the directory it must stay in, its implied module."""

    path: Path
    within: Path | None
    module: str | None = None

    @property
    def key(self) -> str:
        return str(self.path.absolute())


@dataclass(frozen=True)
class FileResult:
    """One read of one file: its digest, its module, and either actions or problems."""

    digest: str | None
    specs: tuple[ActionSpec, ...]
    problems: tuple[Problem, ...]
    module: str | None = None


def evaluate(
    source: Source, resolver: Resolver, data: tuple[str | None, bytes, Problem | None] | None = None
) -> FileResult:
    """Read (unless ``data`` is given) and check one file on its own."""
    text, raw, problem = data if data is not None else read_source(source.path, source.within)
    digest = hashlib.sha256(raw).hexdigest() if raw or text is not None else None
    if problem is not None:
        return FileResult(digest, (), (problem,), source.module)
    assert text is not None
    root, problems = parse_tree(text)
    module = file_module(root, source.module)
    if root is None and problems:
        return FileResult(digest, (), tuple(problems), module)
    specs, more = check_document(root, implied_module=source.module, resolver=resolver)
    problems.extend(more)
    problems.sort(key=lambda p: (p.line, p.col))
    return FileResult(digest, tuple(specs) if not problems else (), tuple(problems), module)


@dataclass(frozen=True)
class FileRecord:
    """The registry's view of one file: its last good actions and its current errors."""

    source: Source
    display: str
    signature: tuple[int, ...] | None = None
    digest: str | None = None
    actions: tuple[CompiledAction, ...] = ()
    errors: tuple[str, ...] = ()
    loaded_at: float | None = None  # when the served version was loaded
    module: str | None = None  # declared (``module:``) or implied; as of the last read

    def status(self) -> dict[str, Any]:
        return {
            "path": self.display,
            "module": self.module if self.module is not None else self.source.module,
            "actions": [a.name for a in self.actions],
            "loaded_at": self.loaded_at,
            "errors": list(self.errors),
            "serving": "last good version"
            if self.errors and self.loaded_at
            else ("none" if self.errors else "current"),
        }


@dataclass(frozen=True)
class Registry:
    """An immutable snapshot: every served action, by name, and every known file."""

    actions: Mapping[str, CompiledAction]
    files: Mapping[str, FileRecord]
    generation: int = 0

    @classmethod
    def build(cls, files: Iterable[FileRecord], generation: int) -> Registry:
        records = {r.source.key: r for r in files}
        actions: dict[str, CompiledAction] = {}
        for key in records:
            for action in records[key].actions:
                actions.setdefault(action.name, action)
        ordered = dict(sorted(actions.items()))
        return cls(MappingProxyType(ordered), MappingProxyType(records), generation)

    @property
    def errors(self) -> list[str]:
        return [e for r in self.files.values() for e in r.errors]
