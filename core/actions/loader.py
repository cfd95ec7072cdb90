"""Which files are loaded, and how a change to them becomes the next registry (SPEC §4.2-4.3).

Files come from ``ACTIONS_DIR`` (``*.yaml``/``*.yml``, one level of subfolders, hidden names
such as Kubernetes' ``..data`` skipped) and from ``modules/<name>/actions.yaml`` (module
implied; the files of modules disabled by ``MODULES_DISABLED`` too: their actions answer 503).
Each file is checked on its own (:func:`~core.actions.registry.evaluate`), then against the
others (:func:`clashes`: a name defined in two files is an error in both, whatever their order,
at start and at reload alike); a file with errors keeps serving its last good version.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.actions.registry import (
    Binder,
    FileRecord,
    FileResult,
    Registry,
    Source,
    compile_action,
    display_path,
    evaluate,
)
from core.actions.schema import ActionSpec, Resolver
from core.actions.yamlsafe import Problem, read_source

SUFFIXES = (".yaml", ".yml")
MODULE_FILE = "actions.yaml"
EMPTY_GRACE_S = 1.0  # an empty file is an error only once it has stayed empty this long


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
    """Every file that would be loaded now, in load order (the order of the files in
    ``actions_status``; it decides nothing else): modules' own files first (``modules`` is
    ``(name, directory)`` in module order), then ``actions_dir``."""
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

Names = tuple[tuple[str, int, int], ...]
"""Action names a file defines, each with its line and column."""


@dataclass(frozen=True)
class Claim:
    """The names one file stands for while files are checked against each other: ``proposed``,
    those of its content just read when that content is valid on its own (``None`` otherwise),
    and ``served``, those of the version it serves now (its last good one)."""

    display: str
    proposed: Names | None
    served: Names


def names_of(specs: Iterable[ActionSpec]) -> Names:
    return tuple((s.name, s.line, s.col) for s in specs)


def clashes(claims: Mapping[str, Claim]) -> dict[str, list[Problem]]:
    """Names are unique across all files (SPEC §4.2): a name defined in two files is an error in
    BOTH, at start and at reload alike, whatever the order of the files; each message names the
    other file. Like any error, it keeps a file from loading its new content: at start neither
    file is loaded; at reload a file that was serving keeps its last good version.

    A file in error stands for what it serves (its last good version), which may clash in turn:
    repeated until no other file is caught. Returns the problems by file key."""
    flagged: dict[str, dict[str, Problem]] = {}
    while True:
        owners: dict[str, list[tuple[str, int, int]]] = {}
        for key, claim in claims.items():
            names = claim.proposed if claim.proposed is not None and key not in flagged else claim.served
            for name, line, col in names:
                owners.setdefault(name, []).append((key, line, col))
        caught = False
        for name, places in owners.items():
            if len(places) < 2:
                continue
            for key, line, col in places:
                others = ", ".join(f"{claims[o].display}:{ln}:{cl}" for o, ln, cl in places if o != key)
                caught |= key not in flagged
                flagged.setdefault(key, {}).setdefault(
                    name,
                    Problem(
                        line,
                        col,
                        f"actions.{name}",
                        f"action {name!r} is also defined in {others}; names are unique across all files: "
                        "rename or remove one of the definitions",
                    ),
                )
        if not caught:
            return {key: sorted(found.values(), key=lambda p: (p.line, p.col)) for key, found in flagged.items()}


def check_files(
    checked: list[Source], sources: list[Source], served: Registry, resolver: Resolver, binder: Binder
) -> tuple[list[str], int]:
    """Check the files ``checked`` as a load of them next to ``sources`` (every file the app
    loads) would: each on its own, then every name against every other file. ``(errors of the
    checked files, their actions)``."""
    everything = {s.key: s for s in sources}
    everything.update((s.key, s) for s in checked)
    results = {k: evaluate(s, resolver) for k, s in everything.items()}
    claims = {}
    for k, source in everything.items():
        record = served.files.get(k)
        result = results[k]
        claims[k] = Claim(
            display_path(source.path),
            None if result.problems else names_of(result.specs),
            names_of(a.spec for a in record.actions) if record is not None else (),
        )
    clashing = clashes(claims)
    errors: list[str] = []
    count = 0
    for source in checked:
        k = source.key
        result, display = results[k], claims[k].display
        problems = list(result.problems) or clashing.get(k, [])
        if problems:
            errors.extend(p.format(display) for p in problems)
            continue
        for spec in result.specs:
            compile_action(spec, display, binder)  # what a load would build
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
        self.records[k] = replace(record, signature=self.sigs[k], digest=result.digest, module=result.module)

    def touched_registry(self) -> Registry:
        """The served registry with the new signatures of files rewritten with the same bytes."""
        old = self.old
        return Registry(old.actions, MappingProxyType(dict(self.records)), old.generation)

    def check(self) -> None:
        """Check every file against the others (names are unique: :func:`clashes`) and compile
        the good ones. Files in error are read again: the name they clashed on may be gone; a
        file that did not change can be caught by a new file defining one of its names."""
        for k, record in self.records.items():
            if record.errors and k not in self.results and k in self.sources:
                self.results[k] = evaluate(self.sources[k], self.resolver)
        claims = {}
        for k, record in self.records.items():
            result = self.results.get(k)
            proposed = names_of(result.specs) if result is not None and not result.problems else None
            claims[k] = Claim(record.display, proposed, names_of(a.spec for a in record.actions))
        clashing = clashes(claims)
        now = time.time()
        for k in sorted(self.records, key=self._order(0)):
            result = self.results.get(k)
            if result is not None:
                self._accept_or_fail(k, list(result.problems) or clashing.get(k, []), now)
            elif k in clashing:
                self._fail(k, clashing[k])

    def _accept_or_fail(self, k: str, problems: list[Problem], now: float) -> None:
        if problems:
            self._fail(k, problems)
            return
        record = self.records[k]
        actions = tuple(compile_action(spec, record.display, self.binder) for spec in self.results[k].specs)
        self.accepted.append(record.display)
        self.records[k] = replace(record, actions=actions, errors=(), loaded_at=now)

    def _fail(self, k: str, problems: list[Problem]) -> None:
        """The file keeps what it serves (its last good version, if any) and shows ``problems``."""
        record = self.records[k]
        errors = tuple(p.format(record.display) for p in problems)
        if errors != record.errors:
            self.failed.append((record.display, list(errors)))
        self.records[k] = replace(record, errors=errors)

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
