"""ModuleManager: discovery, dependency order, isolation of failures, dispose (SPEC §5)."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from flask import Blueprint, Flask

from core.errors import ModuleError, ServiceUnavailable
from core.managers.base import Manager
from core.module import BaseModule

if TYPE_CHECKING:
    from core.app_manager import AppManager

logger = logging.getLogger(__name__)

STARTED, FAILED, SKIPPED = "started", "failed", "skipped"
# A package that cannot be imported cannot say `required = True`; its source still can.
_REQUIRED_RE = re.compile(r"^\s+required\s*(:\s*bool\s*)?=\s*True\b", re.MULTILINE)


class ModuleRecord:
    __slots__ = ("error", "instance", "name", "path", "state")

    def __init__(self, name: str, instance: BaseModule, path: Path) -> None:
        self.name = name
        self.instance = instance
        self.path = path
        self.state = "loaded"
        self.error: str | None = None


def _import_package(directory: Path, name: str) -> ModuleType:
    """Import ``directory/name/__init__.py`` as a package.

    The project's own ``modules/`` is imported as ``modules.<name>`` (so module code can use
    normal imports); any other directory gets a package name derived from its path, so two
    module directories never shadow each other.
    """
    directory = directory.resolve()
    project_modules = (Path(__file__).resolve().parents[2] / "modules").resolve()
    if directory == project_modules:
        return importlib.import_module(f"modules.{name}")
    parent = "keel_ext_" + hashlib.sha1(str(directory).encode()).hexdigest()[:12]  # noqa: S324 - a name, not security
    if parent not in sys.modules:
        parent_mod = ModuleType(parent)
        parent_mod.__path__ = [str(directory)]
        sys.modules[parent] = parent_mod
    qualified = f"{parent}.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    init = directory / name / "__init__.py"
    spec = importlib.util.spec_from_file_location(qualified, init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise ModuleError(f"module {name!r}: cannot import {init}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[qualified]
        raise
    return mod


def _module_class(package: ModuleType, entry: Path) -> type[BaseModule]:
    classes = [
        obj
        for obj in vars(package).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModule)
        and obj is not BaseModule
        and (obj.__module__ == package.__name__ or obj.__module__.startswith(package.__name__ + "."))
    ]
    if len(classes) != 1:
        raise ModuleError(
            f"{_shown(entry / '__init__.py')} must define exactly one BaseModule subclass, found {len(classes)}"
        )
    return classes[0]


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (as editors show it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _import_failure(exc: Exception, init: Path) -> str:
    """One line an editor can jump to: ``modules/x/__init__.py:3:25: SyntaxError: expected ':'``."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{_shown(Path(exc.filename))}:{exc.lineno}:{exc.offset}"
        return f"{where}: {type(exc).__name__}: {exc.msg}"
    if isinstance(exc, ModuleError):
        return str(exc)
    package_dir = init.parent.resolve()
    where = _shown(init)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = Path(frame.f_code.co_filename)
        if filename.is_relative_to(package_dir):
            where = f"{_shown(filename)}:{lineno}"  # the innermost line of the module's own code
    return f"{where}: {type(exc).__name__}: {exc}"


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _unavailable(rest: str) -> NoReturn:  # pragma: no cover - the blueprint's before_request answers first
    raise ServiceUnavailable()


class _Unloadable(BaseModule):
    """Stands for a module package that could not be loaded: it has a name and a reason, no
    code; it is never initialized (its state is ``failed`` from the start)."""

    version = "-"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def initialize(self, app_manager: AppManager) -> None:  # pragma: no cover - never called
        raise ModuleError(f"module {self.name!r} could not be loaded")


def order_modules(deps: dict[str, list[str]]) -> list[str]:
    """Topological order (dependencies first, then by name). Raises on cycles and missing names."""
    for name in sorted(deps):
        for dep in deps[name]:
            if dep not in deps:
                raise ModuleError(f"module {name!r} depends on {dep!r}, which is not available (missing or disabled)")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done
    stack: list[str] = []

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name) :], name]
            raise ModuleError("module dependency cycle: " + " -> ".join(cycle))
        state[name] = 1
        stack.append(name)
        for dep in sorted(deps[name]):
            visit(dep)
        stack.pop()
        state[name] = 2
        order.append(name)

    for name in sorted(deps):
        visit(name)
    return order


class ModuleManager(Manager):
    name: ClassVar[str] = "modules"

    def __init__(self) -> None:
        self.records: dict[str, ModuleRecord] = {}
        self.order: list[str] = []
        self.disabled: list[str] = []
        self._import_errors: dict[str, Exception] = {}  # logged with their traceback by init_app

    # -- discovery --------------------------------------------------------------------------
    def discover(self, directory: Path, disabled: list[str]) -> list[tuple[str, type[BaseModule] | str, Path]]:
        """``(name, class, path)`` per module package; when a package cannot be loaded (a
        syntax error, an import that fails, not exactly one BaseModule subclass) the class is
        replaced by the one-line reason, and the module is marked failed like one whose
        ``initialize`` raised."""
        found: list[tuple[str, type[BaseModule] | str, Path]] = []
        if not directory.is_dir():
            logger.warning("MODULES_DIR %s does not exist; no modules loaded", directory)
            return found
        for entry in sorted(directory.iterdir()):
            if not (entry / "__init__.py").is_file() or entry.name.startswith(("_", ".")):
                continue
            if entry.name in disabled:
                self.disabled.append(entry.name)
                continue
            try:
                cls = _module_class(_import_package(directory, entry.name), entry)
            except Exception as exc:  # noqa: BLE001 - isolated like an initialize failure (SPEC §5); reported below
                found.append((entry.name, _import_failure(exc, entry / "__init__.py"), entry))
                self._import_errors[entry.name] = exc
                continue
            found.append((cls.name or entry.name, cls, entry))
        return found

    # -- lifecycle --------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        """Discover, order, initialize and route every module (the last manager declared).
        Unlike the managers' declarations, a module's ``initialize`` may hold resources: when
        loading stops half-way (a required module failed), the started ones are disposed here."""
        super().init_app(app, am)
        try:
            self._load(app, am)
        except BaseException:
            self.dispose()
            raise

    def _load(self, app: Flask, am: AppManager) -> None:
        settings = am.settings
        directory = Path(settings["MODULES_DIR"])
        found = self.discover(directory, settings["MODULES_DISABLED"])
        names = [n for n, _, _ in found]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ModuleError(f"module name(s) defined twice: {', '.join(dupes)}")
        classes = {n: (cls, path) for n, cls, path in found}
        deps = {n: [] if isinstance(c, str) else list(c.dependencies) for n, (c, _) in classes.items()}
        self.order = order_modules(deps)
        for name in self.order:
            cls, path = classes[name]
            if isinstance(cls, str):  # the package could not be loaded: failed, like initialize
                if _REQUIRED_RE.search((path / "__init__.py").read_text(encoding="utf-8", errors="replace")):
                    raise ModuleError(f"required module {name!r} could not be loaded: {cls}")
                record = self.records[name] = ModuleRecord(name, _Unloadable(name), path)
                record.state, record.error = FAILED, cls
                logger.error("module %s failed to load: %s", name, cls, exc_info=self._import_errors.pop(name, None))
                continue
            instance = cls()
            if not instance.name:
                instance.name = name
            self.records[name] = ModuleRecord(name, instance, path)

        for name in self.order:
            self._start(name, am)
        for name in self.order:
            self._register_routes(app, self.records[name])
        for name in self.order:
            record = self.records[name]
            if record.state != STARTED:
                continue
            try:
                record.instance.configure()
            except Exception as exc:  # noqa: BLE001 - isolated: _fail logs the traceback (or re-raises if required)
                self._fail(record, exc, "configure")

    def _start(self, name: str, am: AppManager) -> None:
        record = self.records[name]
        if record.state == FAILED:
            return
        blocked = [d for d in record.instance.dependencies if self.records[d].state != STARTED]
        if blocked:
            record.state = SKIPPED
            record.error = f"not started: dependency {', '.join(blocked)} is not running"
            logger.error("module %s %s", name, record.error)
            if record.instance.required:
                raise ModuleError(f"required module {name!r} {record.error}")
            return
        started = time.perf_counter()
        try:
            record.instance.app_manager = am
            record.instance.initialize(am)
        except Exception as exc:  # noqa: BLE001 - isolated: _fail logs the traceback (or re-raises if required)
            self._fail(record, exc, "initialize")
            return
        record.state = STARTED
        elapsed_ms = (time.perf_counter() - started) * 1e3
        logger.info("module %s %s started in %.1f ms", name, record.instance.version, elapsed_ms)
        am.hooks.trigger("module_started", name=name, module=record.instance)

    def _fail(self, record: ModuleRecord, exc: Exception, phase: str) -> None:
        record.state = FAILED
        record.error = f"{phase} failed: {type(exc).__name__}: {exc}"
        logger.error("module %s %s", record.name, record.error, exc_info=exc)
        if record.instance.required:
            raise ModuleError(f"required module {record.name!r} {record.error}") from exc

    def _register_routes(self, app: Flask, record: ModuleRecord) -> None:
        instance = record.instance
        prefix = instance.url_prefix if instance.url_prefix is not None else f"/{record.name}"
        bp = Blueprint(f"module_{record.name}", type(instance).__module__, url_prefix=prefix or None)

        @bp.before_request
        def _module_must_run() -> None:
            if record.state != STARTED:
                raise ServiceUnavailable(f"module {record.name!r} is not running")

        if isinstance(instance, _Unloadable):
            # Nothing of it runs, but its URLs answer 503 (not 404): the module exists and failed.
            bp.add_url_rule("/", "unavailable", _unavailable, defaults={"rest": ""}, methods=_ALL_METHODS)
            bp.add_url_rule("/<path:rest>", "unavailable", _unavailable, methods=_ALL_METHODS)
        try:
            instance.register_routes(bp)
        except Exception as exc:  # noqa: BLE001 - isolated: _fail logs the traceback (or re-raises if required)
            if record.state != STARTED:
                # Already failed or skipped: keep the first error; its routes are simply absent.
                logger.warning("module %s register_routes raised %s after its start failed", record.name, exc)
                return
            self._fail(record, exc, "register_routes")
            return
        if bp.deferred_functions:  # the module added routes (before_request is not deferred)
            app.register_blueprint(bp)

    def get(self, name: str) -> BaseModule | None:
        record = self.records.get(name)
        return record.instance if record is not None else None

    def running(self, name: str) -> bool:
        return self.state(name) == STARTED

    def code_missing(self, name: str) -> bool:
        """Whether the module exists but its code is not loaded: it is in ``MODULES_DISABLED``,
        or its package could not be imported (so its ``@action`` handlers cannot be checked)."""
        record = self.records.get(name)
        return name in self.disabled or (record is not None and isinstance(record.instance, _Unloadable))

    def state(self, name: str) -> str | None:
        record = self.records.get(name)
        return record.state if record is not None else None

    def info(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "version": r.instance.version,
                "state": r.state,
                "dependencies": list(r.instance.dependencies),
                "required": r.instance.required,
                "error": r.error,
            }
            for r in (self.records[n] for n in self.order)
        ]

    def module_health(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.order:
            record = self.records[name]
            if record.state != STARTED:
                out[name] = {"status": "unhealthy", "state": record.state, "error": record.error}
                continue
            try:
                report = dict(record.instance.health_check())
            except Exception as exc:
                # A module's broken health_check makes it unhealthy, not /health: logged, reported.
                logger.exception("module %s health_check raised", name)
                report = {"status": "unhealthy", "error": f"health_check raised {type(exc).__name__}"}
            report.setdefault("status", "healthy")
            report["state"] = record.state
            out[name] = report
        return out

    def dispose(self) -> None:
        for name in reversed(self.order):
            record = self.records.get(name)  # loading may have stopped before every record
            if record is None or record.state != STARTED:
                continue
            try:
                record.instance.dispose()
            except Exception:
                # Shutdown must reach every module; one failing dispose is logged, not fatal.
                logger.exception("module %s dispose raised", name)
            record.state = "stopped"
