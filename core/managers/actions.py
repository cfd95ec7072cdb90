"""ActionManager: loads action YAML, serves the registry, hot-reloads it (SPEC §4).

Files come from ``ACTIONS_DIR`` (``*.yaml``/``*.yml``, one level of subfolders, hidden names
such as Kubernetes' ``..data`` skipped) and from ``modules/<name>/actions.yaml`` (module
implied). Each file is checked on its own (:func:`core.actions.registry.evaluate`), then
against the others (action names are unique); a file with errors keeps serving its last good
version. The result is an immutable :class:`~core.actions.registry.Registry` that is swapped in
one assignment.

Hot reload: a daemon thread per app (so per worker process) polls file signatures every
``ACTIONS_RELOAD_INTERVAL`` seconds. A change is read only once the file's signature has been
stable for a short settle delay and did not move while it was read; the content digest decides
whether anything changed at all. That is what makes an in-place write, write-temp-then-rename,
delete+create and a ConfigMap ``..data`` symlink swap each cause exactly one reload and never a
read of a half-written file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask, current_app

from core.actions.registry import (
    CompiledAction,
    FileRecord,
    FileResult,
    Handler,
    Registry,
    Source,
    compile_action,
    display_path,
    evaluate,
)
from core.actions.schema import suggest
from core.actions.yamlsafe import Problem, read_source
from core.managers.base import Manager
from core.module import BaseModule

if TYPE_CHECKING:
    from core.app_manager import AppManager

logger = logging.getLogger(__name__)
audit = logging.getLogger("keel.audit")

SUFFIXES = (".yaml", ".yml")
MODULE_FILE = "actions.yaml"
EMPTY_GRACE_S = 1.0  # an empty file is an error only once it has stayed empty this long


def _signature(path: Path) -> tuple[int, ...] | None:
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


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


class ActionManager(Manager):
    name: ClassVar[str] = "actions"

    def __init__(self) -> None:
        self._registry = Registry.build([], 0)
        self._am: AppManager | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = 0.0
        self._handlers: dict[str, dict[str, Any]] = {}
        self._openapi: tuple[tuple[int, ...], dict[str, Any]] | None = None
        self.reload_errors_total = 0
        self.reloads_total = 0
        self.last_reload: float | None = None

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        from core.actions.dispatch import bp

        self._am = app.extensions["keel"]
        app.register_blueprint(bp)

    # -- public API -------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """The current immutable registry (read it once per request)."""
        return self._registry

    @property
    def app_manager(self) -> AppManager:
        return self._require_am()

    def get(self, name: str) -> CompiledAction | None:
        return self._registry.actions.get(name)

    def count(self) -> int:
        return len(self._registry.actions)

    def start(self) -> None:
        """Load every file; start the reload thread when ``ACTIONS_RELOAD_INTERVAL`` > 0.

        Runs after the modules are declared (handlers are checked against them)."""
        am = self._require_am()
        self._interval = float(am.settings["ACTIONS_RELOAD_INTERVAL"])
        actions_dir = Path(am.settings["ACTIONS_DIR"])
        if not actions_dir.is_dir():
            logger.warning("ACTIONS_DIR %s does not exist; only modules' actions.yaml files are loaded", actions_dir)
        started = time.perf_counter()
        self._sync(initial=True)
        registry = self._registry
        logger.info(
            "loaded %d actions from %d files in %.1f ms%s",
            len(registry.actions),
            len(registry.files),
            (time.perf_counter() - started) * 1e3,
            f" ({len(registry.errors)} errors)" if registry.errors else "",
        )
        if self._interval > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="keel-actions-reload", daemon=True)
            self._thread.start()

    def reload(self) -> dict[str, Any]:
        """Pick up changed, added and removed files now. Returns what changed."""
        return self._sync()

    def status(self) -> dict[str, Any]:
        """Loaded files, last reload time, current errors with file:line (admin ``actions_status``)."""
        registry = self._registry
        return {
            "action_count": len(registry.actions),
            "files": [r.status() for r in registry.files.values()],
            "errors": registry.errors,
            "last_reload": _iso(self.last_reload),
            "generation": registry.generation,
            "reloads_total": self.reloads_total,
            "reload_errors_total": self.reload_errors_total,
            "reload_interval_s": self._interval,
            "watching": self._thread is not None and self._thread.is_alive(),
        }

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the current app (cached per registry and route map)."""
        from core.actions.openapi import build_openapi

        app = current_app._get_current_object()  # type: ignore[attr-defined]
        registry = self._registry
        key = (registry.generation, id(registry), len(list(app.url_map.iter_rules())))
        cached = self._openapi
        if cached is not None and cached[0] == key:
            return cached[1]
        doc = build_openapi(registry, app, self._require_am().version)
        self._openapi = (key, doc)
        return doc

    def health(self) -> dict[str, Any]:
        registry = self._registry
        errors = registry.errors
        report: dict[str, Any] = {
            "status": "degraded" if errors else "healthy",
            "actions": len(registry.actions),
            "files": len(registry.files),
            "reload_errors_total": self.reload_errors_total,
        }
        if errors:
            report["error"] = f"{len(errors)} error(s) in action files; see the actions_status action"
        return report

    def dispose(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- checking files without serving them (CLI validate) ---------------------------------
    def sources(self) -> list[Source]:
        """Every file that would be loaded now, in load order: modules' own files first (shipped
        with the code), then ``ACTIONS_DIR`` — so at boot an admin's file that reuses a module's
        action name is the one rejected."""
        am = self._require_am()
        out: list[Source] = []
        for name in am.modules.order:
            record = am.modules.records[name]
            path = record.path / MODULE_FILE
            if path.exists() or path.is_symlink():
                out.append(Source(path, record.path, name))
        actions_dir = Path(am.settings["ACTIONS_DIR"])
        try:
            entries = sorted(actions_dir.iterdir())
        except OSError:
            return out  # no ACTIONS_DIR (warned about at load)
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden: editors' temp files, Kubernetes' ..data and ..<timestamp> dirs
            if entry.suffix in SUFFIXES and not entry.is_dir():
                out.append(Source(entry, actions_dir))
            elif entry.is_dir():
                try:
                    subs = sorted(entry.iterdir())
                except OSError:
                    continue  # removed while we looked: the next poll sees the new state
                for sub in subs:
                    if sub.suffix in SUFFIXES and not sub.name.startswith(".") and not sub.is_dir():
                        out.append(Source(sub, actions_dir))
        return out

    def source_for(self, path: Path) -> Source:
        """How a path given on the command line is checked (module implied for a module's file)."""
        am = self._require_am()
        absolute = path.absolute()
        actions_dir = Path(am.settings["ACTIONS_DIR"]).absolute()
        for name in am.modules.order:
            record = am.modules.records[name]
            if absolute == (record.path / MODULE_FILE).absolute():
                return Source(path, record.path, name)
        if actions_dir == absolute.parent or actions_dir == absolute.parent.parent:
            return Source(path, actions_dir)
        return Source(path, absolute.parent)

    def validate_files(self, sources: list[Source]) -> tuple[list[str], int]:
        """Check files as a load would, names against the served files. ``(errors, actions)``."""
        others = {k: r for k, r in self._registry.files.items() if k not in {s.key for s in sources}}
        taken = {a.name: (r, a) for r in others.values() for a in r.actions}
        errors: list[str] = []
        count = 0
        for source in sources:
            result = evaluate(source, self._resolve)
            display = display_path(source.path)
            problems = list(result.problems) or self._duplicates(result, taken)
            if problems:
                errors.extend(p.format(display) for p in problems)
                continue
            compiled = tuple(compile_action(s, display, self._bind) for s in result.specs)
            record = FileRecord(source, display, actions=compiled)
            for a in record.actions:
                taken[a.name] = (record, a)
            count += len(result.specs)
        return errors, count

    # -- handlers ---------------------------------------------------------------------------
    def _require_am(self) -> AppManager:
        if self._am is None:
            raise RuntimeError("ActionManager.init_app(app) was not called")
        return self._am

    def _module_handlers(self, module: str) -> dict[str, Any] | None:
        if module not in self._handlers:
            instance = self._require_am().modules.get(module)
            if instance is None:
                return None
            self._handlers[module] = type(instance).action_handlers()
        return self._handlers[module]

    def _resolve(self, module: str, method: str) -> str | None:
        modules = self._require_am().modules
        handlers = self._module_handlers(module)
        if handlers is None:
            if module in modules.disabled:
                return f"module {module!r} is disabled (MODULES_DISABLED); its actions cannot be served"
            known = list(modules.order)
            return f"no module named {module!r}{suggest(module, known)}; modules: {', '.join(known) or 'none'}"
        if method in handlers:
            return None
        instance = modules.get(module)
        if callable(getattr(instance, method, None)) and not method.startswith("_"):
            return f"{module}.{method} is not marked @action; only @action methods can be named in YAML"
        available = sorted(handlers)
        return (
            f"module {module!r} has no @action method {method!r}{suggest(method, available)}; "
            f"@action methods: {', '.join(available) or 'none'}"
        )

    def _bind(self, module: str, method: str) -> Handler:
        instance: BaseModule | None = self._require_am().modules.get(module)
        assert instance is not None
        handler: Handler = getattr(instance, method)
        return handler

    # -- loading and reloading --------------------------------------------------------------
    @staticmethod
    def _duplicates(result: FileResult, taken: dict[str, tuple[FileRecord, CompiledAction]]) -> list[Problem]:
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

    def _watch(self) -> None:
        settle = min(0.05, self._interval / 2)
        while not self._stop.wait(self._interval):
            try:
                self._sync(settle=settle)
            except Exception:
                # The watcher must outlive one bad poll: logged with its traceback, retried next tick.
                logger.exception("actions reload poll failed; retrying in %.2f s", self._interval)

    def _sync(self, *, settle: float = 0.0, initial: bool = False) -> dict[str, Any]:
        with self._lock:
            return self._sync_locked(settle, initial)

    def _sync_locked(self, settle: float, initial: bool) -> dict[str, Any]:
        started = time.perf_counter()
        old = self._registry
        sources = {s.key: s for s in self.sources()}
        sigs = {k: _signature(s.path) for k, s in sources.items()}
        changed = [k for k in sources if k not in old.files or old.files[k].signature != sigs[k]]
        removed = [k for k in old.files if k not in sources]
        if not changed and not removed:
            return {"changed": [], "removed": [], "errors": []}
        if settle > 0:
            # Let a writer finish: only what stayed the same across the settle delay is read.
            time.sleep(settle)
            now_sources = {s.key: s for s in self.sources()}
            changed = [k for k in changed if k in now_sources and _signature(now_sources[k].path) == sigs[k]]
            removed = [k for k in removed if k not in now_sources]

        records: dict[str, FileRecord] = {k: r for k, r in old.files.items() if k not in removed}
        results: dict[str, FileResult] = {}
        touched = False
        for k in changed:
            source = sources[k]
            data = read_source(source.path, source.within)
            if settle > 0 and _signature(source.path) != sigs[k]:
                continue  # moved while being read: try again at the next poll
            if settle > 0 and not data[1].strip() and _age(source.path) < EMPTY_GRACE_S:
                continue  # truncated a moment ago: most likely an editor between truncate and write
            result = evaluate(source, self._resolve, data)
            previous = records.get(k)
            if previous is not None and result.digest is not None and previous.digest == result.digest:
                records[k] = replace(previous, signature=sigs[k])  # touched, same bytes: nothing to do
                touched = True
                continue
            results[k] = result
            records.setdefault(k, FileRecord(source, display_path(source.path)))
            records[k] = replace(records[k], signature=sigs[k], digest=result.digest)
        if not results and not removed:
            if touched:
                self._registry = Registry(old.actions, dict(records), old.generation, old.built_at)
            return {"changed": [], "removed": [], "errors": []}
        # Something changed: files in error may be fine now (a clashing name may be gone).
        for k, record in records.items():
            if record.errors and k not in results and k in sources:
                results[k] = evaluate(sources[k], self._resolve)

        order = {k: i for i, k in enumerate(sources)}
        accepted: list[str] = []
        failed: list[tuple[str, list[str]]] = []
        now = time.time()
        for k in sorted(results, key=lambda key: order.get(key, 0)):
            result = results[k]
            record = records[k]
            others = {a.name: (r, a) for key, r in records.items() if key != k for a in r.actions}
            problems = list(result.problems) or self._duplicates(result, others)
            if problems:
                errors = tuple(p.format(record.display) for p in problems)
                if errors != record.errors:
                    failed.append((record.display, list(errors)))
                records[k] = replace(record, errors=errors, checked_at=now)
                continue
            actions = tuple(compile_action(spec, record.display, self._bind) for spec in result.specs)
            accepted.append(record.display)
            records[k] = replace(record, actions=actions, errors=(), loaded_at=now, checked_at=now)

        ordered = [records[k] for k in sorted(records, key=lambda key: order.get(key, len(order)))]
        self._registry = Registry.build(ordered, old.generation + 1)
        removed_display = [old.files[k].display for k in removed]
        elapsed_ms = round((time.perf_counter() - started) * 1e3, 2)
        self._report(initial, accepted, removed_display, failed, elapsed_ms)
        return {"changed": accepted, "removed": removed_display, "errors": [e for _, es in failed for e in es]}

    def _report(
        self, initial: bool, accepted: list[str], removed: list[str], failed: list[tuple[str, list[str]]], ms: float
    ) -> None:
        am = self._require_am()
        for display, errors in failed:
            logger.error(
                "action file %s rejected (%s):\n  %s",
                display,
                "the last good version keeps serving" if not initial else "not loaded",
                "\n  ".join(errors),
            )
            if not initial:  # counted like keel_actions_reload_errors_total: reloads, not the boot
                self.reload_errors_total += 1
                audit.warning("actions reload failed: %s (%d errors)", display, len(errors))
                am.hooks.trigger("actions_reload_failed", file=display, errors=errors)
        if initial:
            self.last_reload = time.time()
            return
        if accepted or removed:
            self.reloads_total += 1
            self.last_reload = time.time()
            count = len(self._registry.actions)
            audit.info("actions reloaded: changed=%s removed=%s (%d actions, %.1f ms)", accepted, removed, count, ms)
            am.hooks.trigger("actions_reloaded", files=accepted, removed=removed, action_count=count, duration_ms=ms)
