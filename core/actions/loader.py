"""Which files are loaded, and how a change to them becomes the next registry (SPEC §4.2-4.3).

Files come from ``ACTIONS_DIR`` (``*.yaml``/``*.yml``, one level of subfolders, hidden names
such as Kubernetes' ``..data`` skipped) and from ``modules/<name>/actions.yaml`` (module
implied). Each file is checked on its own (:func:`~core.actions.registry.evaluate`), then
against the others (action names are unique); a file with errors keeps serving its last good
version.

:class:`Reload` is one pass from the served registry to the next, in named steps (scan, settle,
read the changed files, check them against each other, build). The caller runs it under its
lock and swaps the result in one assignment. A change is read only once the file's signature
stayed the same across the settle delay and did not move while it was read; the content
digest decides whether anything changed at all. That is what makes an in-place write,
write-temp-then-rename, delete+create and a ConfigMap ``..data`` symlink swap each cause
exactly one reload and never a read of a half-written file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.actions.registry import (
    Binder,
    CompiledAction,
    FileRecord,
    FileResult,
    Registry,
    Source,
    compile_action,
    display_path,
    evaluate,
)
from core.actions.schema import Resolver
from core.actions.yamlsafe import Problem, read_source

SUFFIXES = (".yaml", ".yml")
MODULE_FILE = "actions.yaml"
EMPTY_GRACE_S = 1.0  # an empty file is an error only once it has stayed empty this long

Taken = dict[str, tuple[FileRecord, CompiledAction]]
"""Action names already served: name → (its file, the action)."""


def signature(path: Path) -> tuple[int, ...] | None:
    """What changes when a file (or the symlink chain leading to it) changes."""
    try:
        st = os.stat(path)
        lst = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns, lst.st_ino, lst.st_mtime_ns)


def _age(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


# --- which files -----------------------------------------------------------------------------


def find_sources(modules: Iterable[tuple[str, Path]], actions_dir: Path) -> list[Source]:
    """Every file that would be loaded now, in load order: modules' own files first (shipped
    with the code; ``modules`` is ``(name, directory)`` in module order), then ``actions_dir``
    — so at boot an admin's file that reuses a module's action name is the one rejected."""
    out: list[Source] = []
    for name, directory in modules:
        path = directory / MODULE_FILE
        if path.exists() or path.is_symlink():
            out.append(Source(path, directory, name))
    try:
        entries = sorted(actions_dir.iterdir())
    except OSError:
        return out  # no ACTIONS_DIR (warned about at start)
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden: editors' temp files, Kubernetes' ..data and ..<timestamp> dirs
        if entry.suffix in SUFFIXES and not entry.is_dir():
            out.append(Source(entry, actions_dir))
        elif entry.is_dir():
            out.extend(Source(sub, actions_dir) for sub in _subfolder_files(entry))
    return out


def _subfolder_files(folder: Path) -> list[Path]:
    try:
        subs = sorted(folder.iterdir())
    except OSError:
        return []  # removed while we looked: the next poll sees the new state
    return [sub for sub in subs if sub.suffix in SUFFIXES and not sub.name.startswith(".") and not sub.is_dir()]


def source_for(path: Path, modules: Iterable[tuple[str, Path]], actions_dir: Path) -> Source:
    """How a path given on the command line is checked (module implied for a module's file)."""
    absolute = path.absolute()
    for name, directory in modules:
        if absolute == (directory / MODULE_FILE).absolute():
            return Source(path, directory, name)
    actions_dir = actions_dir.absolute()
    if actions_dir == absolute.parent or actions_dir == absolute.parent.parent:
        return Source(path, actions_dir)
    return Source(path, absolute.parent)


# --- checking files against each other --------------------------------------------------------


def duplicates(result: FileResult, taken: Taken) -> list[Problem]:
    """A problem for each action of ``result`` whose name another file already serves."""
    out = []
    for spec in result.specs:
        if spec.name in taken:
            record, other = taken[spec.name]
            out.append(
                Problem(
                    spec.line,
                    spec.col,
                    f"actions.{spec.name}",
                    f"action {spec.name!r} is already defined in "
                    f"{record.display}:{other.spec.line}:{other.spec.col}; names are unique across all files",
                )
            )
    return out


def check_files(sources: list[Source], served: Registry, resolver: Resolver, binder: Binder) -> tuple[list[str], int]:
    """Check files as a load would, names against the served files. ``(errors, actions)``."""
    keys = {s.key for s in sources}
    taken: Taken = {a.name: (r, a) for k, r in served.files.items() if k not in keys for a in r.actions}
    errors: list[str] = []
    count = 0
    for source in sources:
        result = evaluate(source, resolver)
        display = display_path(source.path)
        problems = list(result.problems) or duplicates(result, taken)
        if problems:
            errors.extend(p.format(display) for p in problems)
            continue
        record = FileRecord(source, display, actions=tuple(compile_action(s, display, binder) for s in result.specs))
        for a in record.actions:
            taken[a.name] = (record, a)
        count += len(result.specs)
    return errors, count


# --- one reload --------------------------------------------------------------------------------


class Reload:
    """One pass from the served registry ``old`` to the next. Steps, in order: the constructor
    scans (signatures → :attr:`changed`, :attr:`removed`); :meth:`settle` (optional) keeps what
    did not move; :meth:`read` parses and checks each changed file on its own; :meth:`check`
    checks them against the others and compiles the good ones; :meth:`build` makes the registry.
    """

    def __init__(self, old: Registry, sources: list[Source], resolver: Resolver, binder: Binder) -> None:
        self.old = old
        self.resolver = resolver
        self.binder = binder
        self.sources = {s.key: s for s in sources}
        self.sigs = {k: signature(s.path) for k, s in self.sources.items()}
        files = old.files
        self.changed = [k for k in self.sources if k not in files or files[k].signature != self.sigs[k]]
        self.removed = [k for k in files if k not in self.sources]
        self.records: dict[str, FileRecord] = {}
        self.results: dict[str, FileResult] = {}
        self.touched = False  # a file was rewritten with the same bytes: new signature, same actions
        self.accepted: list[str] = []
        self.failed: list[tuple[str, list[str]]] = []

    @property
    def pending(self) -> bool:
        """Anything to look at (a signature moved, or a file went)."""
        return bool(self.changed or self.removed)

    def settle(self, sources: list[Source]) -> None:
        """After the settle delay: keep only the changes whose file stayed the same."""
        now = {s.key: s for s in sources}
        self.changed = [k for k in self.changed if k in now and signature(now[k].path) == self.sigs[k]]
        self.removed = [k for k in self.removed if k not in now]

    def read(self, *, settling: bool) -> bool:
        """Read and check each changed file on its own. True when the registry must be rebuilt
        (otherwise at most :meth:`touched_registry` has new signatures)."""
        self.records = {k: r for k, r in self.old.files.items() if k not in self.removed}
        for k in self.changed:
            self._read_one(k, settling)
        return bool(self.results or self.removed)

    def _read_one(self, k: str, settling: bool) -> None:
        source = self.sources[k]
        data = read_source(source.path, source.within)
        if settling and signature(source.path) != self.sigs[k]:
            return  # moved while being read: try again at the next poll
        if settling and not data[1].strip() and _age(source.path) < EMPTY_GRACE_S:
            return  # truncated a moment ago: most likely an editor between truncate and write
        result = evaluate(source, self.resolver, data)
        previous = self.records.get(k)
        if previous is not None and result.digest is not None and previous.digest == result.digest:
            self.records[k] = replace(previous, signature=self.sigs[k])  # touched, same bytes: nothing to do
            self.touched = True
            return
        self.results[k] = result
        record = self.records.get(k) or FileRecord(source, display_path(source.path))
        self.records[k] = replace(record, signature=self.sigs[k], digest=result.digest)

    def touched_registry(self) -> Registry:
        """The served registry with the new signatures of files rewritten with the same bytes."""
        old = self.old
        return Registry(old.actions, MappingProxyType(dict(self.records)), old.generation)

    def check(self) -> None:
        """Check every file read against the others (names are unique) and compile the good
        ones, in load order. Files in error are checked again: a clashing name may be gone."""
        for k, record in self.records.items():
            if record.errors and k not in self.results and k in self.sources:
                self.results[k] = evaluate(self.sources[k], self.resolver)
        order = self._order(0)
        now = time.time()
        for k in sorted(self.results, key=order):
            self._accept_or_fail(k, now)

    def _accept_or_fail(self, k: str, now: float) -> None:
        result = self.results[k]
        record = self.records[k]
        others: Taken = {a.name: (r, a) for key, r in self.records.items() if key != k for a in r.actions}
        problems = list(result.problems) or duplicates(result, others)
        if problems:
            errors = tuple(p.format(record.display) for p in problems)
            if errors != record.errors:
                self.failed.append((record.display, list(errors)))
            self.records[k] = replace(record, errors=errors)
            return
        actions = tuple(compile_action(spec, record.display, self.binder) for spec in result.specs)
        self.accepted.append(record.display)
        self.records[k] = replace(record, actions=actions, errors=(), loaded_at=now)

    def build(self) -> Registry:
        """The next registry: every known file, in load order."""
        order = self._order(len(self.sources))
        ordered = [self.records[k] for k in sorted(self.records, key=order)]
        return Registry.build(ordered, self.old.generation + 1)

    def _order(self, missing: int) -> Callable[[str], int]:
        position = {k: i for i, k in enumerate(self.sources)}
        return lambda key: position.get(key, missing)

    @property
    def removed_display(self) -> list[str]:
        return [self.old.files[k].display for k in self.removed]

    def summary(self) -> dict[str, Any]:
        """What changed: ``{"changed", "removed", "errors"}`` (what ``reload()`` returns)."""
        return {
            "changed": self.accepted,
            "removed": self.removed_display,
            "errors": [e for _, es in self.failed for e in es],
        }


def no_change() -> dict[str, Any]:
    return {"changed": [], "removed": [], "errors": []}
