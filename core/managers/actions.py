"""ActionManager: loads action YAML, serves the registry, hot-reloads it (SPEC §4).

Which files are loaded and how a change becomes the next registry is
:mod:`core.actions.loader`; the result is an immutable :class:`~core.actions.registry.Registry`
swapped in one assignment. This manager resolves handlers against the running modules, runs
the reload under a lock, and reports it (logs, audit, hooks). The HTTP routes are
:mod:`core.http.dispatch`, the CLI :mod:`core.cli.actions`.

Hot reload: a daemon thread per app (so per worker process) polls file signatures every
``ACTIONS_RELOAD_INTERVAL`` seconds and waits for a stable signature before reading
(:class:`~core.actions.loader.Reload`).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click
from flask import Flask, current_app

from core.actions.loader import Reload, check_files, find_sources, no_change, source_for
from core.actions.openapi import build_openapi
from core.actions.registry import CompiledAction, Handler, Registry, Source
from core.actions.schema import suggest
from core.errors import ServiceUnavailable
from core.logs import audit
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager

logger = logging.getLogger(__name__)


def _unavailable_handler(params: dict[str, Any], ctx: Any) -> Any:
    raise ServiceUnavailable("This action's module is not running.")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


class ActionManager(Manager):
    name: ClassVar[str] = "actions"
    am: AppManager
    _interval: float  # ACTIONS_RELOAD_INTERVAL, seconds (0: no reload thread)
    _actions_dir: Path

    def __init__(self) -> None:
        self._registry = Registry.build([], 0)  # empty until start(); each reload swaps a new one
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, dict[str, Any]] = {}  # module → its @action methods, on first use
        self._openapi: tuple[tuple[int, ...], dict[str, Any]] | None = None
        self.reload_errors_total = 0
        self.reloads_total = 0
        self.last_reload: float | None = None

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am
        self._interval = float(am.settings["ACTIONS_RELOAD_INTERVAL"])
        self._actions_dir = Path(am.settings["ACTIONS_DIR"])
        self._modules_dir = Path(am.settings["MODULES_DIR"])
        # Under a `flask` command (a click context is active while the app loads) the files
        # rejected at start are logged at INFO (shown with -v): `actions validate` and `actions
        # list` print the errors themselves, once, and other commands do not depend on them.
        self._cli = click.get_current_context(silent=True) is not None

    # -- public API -------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """The current immutable registry (read it once per request)."""
        return self._registry

    def get(self, name: str) -> CompiledAction | None:
        return self._registry.actions.get(name)

    def count(self) -> int:
        return len(self._registry.actions)

    def start(self) -> None:
        """Load every file; start the reload thread when ``ACTIONS_RELOAD_INTERVAL`` > 0.

        Runs after the modules are declared (handlers are checked against them)."""
        if not self._actions_dir.is_dir():
            logger.warning(
                "ACTIONS_DIR %s does not exist; only modules' actions.yaml files are loaded", self._actions_dir
            )
        started = time.perf_counter()
        self._sync(initial=True)
        registry = self._registry
        disabled = sum(1 for a in registry.actions.values() if self.unavailable(a.module) is not None)
        logger.info(
            "loaded %d actions from %d files in %.1f ms%s%s",
            len(registry.actions),
            len(registry.files),
            (time.perf_counter() - started) * 1e3,
            f" ({len(registry.errors)} errors)" if registry.errors else "",
            f"; {disabled} disabled (their module is disabled or not running: 503)" if disabled else "",
        )
        if self._interval > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="keel-actions-reload", daemon=True)
            self._thread.start()

    def reload(self) -> dict[str, Any]:
        """Pick up changed, added and removed files now. Returns what changed."""
        return self._sync()

    def unavailable(self, module: str) -> str | None:
        """Why the actions of ``module`` answer 503 (``None``: it runs). Its actions are
        disabled, not errors, when it is in ``MODULES_DISABLED`` or is not running."""
        modules = self.am.modules
        if modules.running(module):
            return None
        state = modules.state(module)
        if state is None and module in modules.disabled:
            return f"module {module!r} is disabled (MODULES_DISABLED)"
        return f"module {module!r} is not running ({state or 'absent'})"

    def status(self) -> dict[str, Any]:
        """Loaded files, last reload time, current errors with file:line, the actions that
        answer 503 because their module is disabled or not running (admin ``actions_status``)."""
        registry = self._registry
        disabled = []
        for action in registry.actions.values():
            reason = self.unavailable(action.module)
            if reason is not None:
                disabled.append({"action": action.name, "module": action.module, "reason": reason})
        return {
            "action_count": len(registry.actions),
            "files": [r.status() for r in registry.files.values()],
            "errors": registry.errors,
            "disabled": disabled,
            "last_reload": _iso(self.last_reload),
            "generation": registry.generation,
            "reloads_total": self.reloads_total,
            "reload_errors_total": self.reload_errors_total,
            "reload_interval_s": self._interval,
            "watching": self._thread is not None and self._thread.is_alive(),
        }

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the current app (cached per registry and route map)."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        registry = self._registry
        key = (registry.generation, id(registry), len(list(app.url_map.iter_rules())))
        cached = self._openapi
        if cached is not None and cached[0] == key:
            return cached[1]
        doc = build_openapi(registry, app, self.am.version)
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
        """Every file that would be loaded now, in load order (:func:`~core.actions.loader.find_sources`)."""
        return find_sources(self._module_dirs(), self._actions_dir)

    def source_for(self, path: Path) -> Source:
        """How a path given on the command line is checked (module implied for a module's file)."""
        return source_for(path, self._module_dirs(), self._actions_dir)

    def validate_files(self, checked: list[Source]) -> tuple[list[str], int]:
        """Check files as a load of them would, each on its own and its names against every
        file the app loads (:func:`~core.actions.loader.check_files`). ``(errors, actions)``."""
        return check_files(checked, self.sources(), self._registry, self._resolve, self._bind)

    def _module_dirs(self) -> list[tuple[str, Path]]:
        """Every module's directory, disabled ones included (their actions are served as 503)."""
        modules = self.am.modules
        running = [(name, modules.records[name].path) for name in modules.order]
        return running + [(name, self._modules_dir / name) for name in modules.disabled]

    # -- handlers ---------------------------------------------------------------------------
    def _module_handlers(self, module: str) -> dict[str, Any] | None:
        if module not in self._handlers:
            instance = self.am.modules.get(module)
            if instance is None:
                return None
            self._handlers[module] = type(instance).action_handlers()
        return self._handlers[module]

    def _code_missing(self, module: str) -> bool:
        """The module's code is not loaded, so its handlers cannot be checked: it is disabled
        (``MODULES_DISABLED``), or its package could not be imported (a failed stand-in)."""
        return self.am.modules.code_missing(module)

    def _resolve(self, module: str, method: str) -> str | None:
        """``None`` when ``module.method`` is an @action of a module, or cannot be checked because
        the module's code is not loaded (its actions are served as 503); else why not."""
        modules = self.am.modules
        if self._code_missing(module):
            return None
        handlers = self._module_handlers(module)
        if handlers is None:
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
        """The bound handler (only called once :meth:`_resolve` said yes); for a module whose
        code is not loaded, one that answers 503 (never reached: dispatch checks the module first)."""
        if self._code_missing(module):
            return _unavailable_handler
        handler: Handler = getattr(self.am.modules.get(module), method)
        return handler

    # -- loading and reloading --------------------------------------------------------------
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
        step = Reload(self._registry, self.sources(), self._resolve, self._bind)  # scan signatures
        if not step.pending:
            return no_change()
        if settle > 0:
            time.sleep(settle)  # let a writer finish: only what stayed the same is read
            step.settle(self.sources())
        if not step.read(settling=settle > 0):  # parse the changed files, each on its own
            if step.touched:
                self._registry = step.touched_registry()
            return no_change()
        step.check()  # against each other: duplicate names; compile the good ones
        self._registry = step.build()  # swap
        self._report(initial, step, round((time.perf_counter() - started) * 1e3, 2))
        return step.summary()

    def _report(self, initial: bool, step: Reload, ms: float) -> None:
        log = logger.info if initial and self._cli else logger.error
        for display, errors in step.failed:
            log(
                "action file %s rejected (%s):\n  %s",
                display,
                "the last good version keeps serving" if not initial else "not loaded",
                "\n  ".join(errors),
            )
            if not initial:  # counted like keel_actions_reload_errors_total: reloads, not the boot
                self.reload_errors_total += 1
                audit(
                    "actions_reload_failed",
                    "failed",
                    f"actions reload failed: {display} ({len(errors)} errors)",
                    file=display,
                    errors=len(errors),
                    actor="reload",
                )
                self.am.hooks.trigger("actions_reload_failed", file=display, errors=errors)
        if initial:
            self.last_reload = time.time()
            return
        accepted, removed = step.accepted, step.removed_display
        if accepted or removed:
            self.reloads_total += 1
            self.last_reload = time.time()
            count = len(self._registry.actions)
            audit(
                "actions_reloaded",
                "ok",
                f"actions reloaded: changed={accepted} removed={removed}",
                files=accepted,
                removed=removed,
                action_count=count,
                actor="reload",
            )
            self.am.hooks.trigger(
                "actions_reloaded", files=accepted, removed=removed, action_count=count, duration_ms=ms
            )
