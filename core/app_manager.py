"""AppManager: a registry of managers and a lifecycle, nothing else (DESIGN habit 2).

``create_app()`` builds one per application and stores it in ``app.extensions["keel"]``;
``core.app_manager`` is a proxy to the current app's one. Managers are created in dependency
order, find each other through it (``am.redis``, ``am.db``, ...), and are disposed in reverse.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app
from werkzeug.local import LocalProxy

from config import Settings

if TYPE_CHECKING:
    from core.managers.hooks import HooksManager
    from core.managers.modules import ModuleManager
    from core.managers.services import ServicesManager

logger = logging.getLogger(__name__)

# (attribute, "module:Class") in dependency order: a manager may use the ones above it.
MANAGERS: list[tuple[str, str]] = [
    ("hooks", "core.managers.hooks:HooksManager"),
    ("services", "core.managers.services:ServicesManager"),
    ("vault", "core.managers.vault:VaultManager"),
    ("redis", "core.managers.redis:RedisManager"),
    ("db", "core.managers.database:DatabaseManager"),
    ("crypto", "core.managers.crypto:CryptoManager"),
    ("state", "core.managers.state:StateManager"),
    ("jwt", "core.managers.jwt:JWTManager"),
    ("api_keys", "core.managers.api_keys:ApiKeyManager"),
    ("limiter", "core.managers.rate_limit:RateLimiterManager"),
    ("websocket", "core.managers.websocket:WebSocketManager"),
    ("actions", "core.managers.actions:ActionManager"),
    ("modules", "core.managers.modules:ModuleManager"),
]


def _load_class(path: str) -> Any:
    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)


def available_managers() -> list[tuple[str, Any]]:
    """The manager classes that exist in this build, in order."""
    out = []
    for attr, path in MANAGERS:
        try:
            out.append((attr, _load_class(path)))
        except ModuleNotFoundError as exc:
            if exc.name != path.partition(":")[0]:
                raise
    return out


class AppManager:
    """Holds the settings and the managers of one Flask app."""

    hooks: HooksManager
    services: ServicesManager
    modules: ModuleManager

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.version = _version()
        self._managers: dict[str, Any] = {}
        self._disposed = False
        self._dispose_lock = threading.Lock()
        app.extensions["keel"] = self
        for attr, cls in available_managers():
            manager = cls()
            # Visible before init_app so that a manager's init_app can use the ones above it.
            self._managers[attr] = manager
            setattr(self, attr, manager)
            try:
                manager.init_app(app)
            except BaseException:
                # The start is stopped: release what the managers built so far (threads,
                # pools) in reverse order before the error propagates.
                self._dispose_managers()
                raise

    def __getattr__(self, name: str) -> Any:
        # Only reached for managers not built in this version: say so instead of AttributeError.
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"AppManager has no manager {name!r} (have: {', '.join(self._managers)})")

    @property
    def managers(self) -> dict[str, Any]:
        return dict(self._managers)

    def health(self) -> dict[str, Any]:
        """Aggregate health (SPEC §11): ``unhealthy`` if a manager is, ``degraded`` if anything
        runs on a fallback or a module is not running."""
        managers: dict[str, Any] = {}
        for attr, manager in self._managers.items():
            if attr == "modules":
                continue
            started = time.perf_counter()
            try:
                report = dict(manager.health())
            except Exception as exc:
                # A health check that raises is an unhealthy manager, not a broken /health:
                # logged with its traceback, reported by exception class only (no secrets).
                logger.exception("health check of manager %s raised", attr)
                report = {"status": "unhealthy", "error": type(exc).__name__}
            report.setdefault("latency_ms", round((time.perf_counter() - started) * 1e3, 2))
            managers[attr] = report
        modules = self.modules.module_health()
        statuses = {r["status"] for r in managers.values()}
        if "unhealthy" in statuses:
            overall = "unhealthy"
        elif "degraded" in statuses or any(m["status"] != "healthy" for m in modules.values()):
            overall = "degraded"
        else:
            overall = "healthy"
        return {
            "status": overall,
            "version": self.version,
            "uptime_s": round(time.time() - self.started_at, 1),
            "managers": managers,
            "modules": modules,
        }

    def dispose(self) -> None:
        """Stop modules and managers in reverse order. Safe to call more than once."""
        with self._dispose_lock:
            if self._disposed:
                return
            self._disposed = True
        self.hooks.trigger("app_stopping", app_manager=self)
        self._dispose_managers()

    def _dispose_managers(self) -> None:
        with self._dispose_lock:
            self._disposed = True
        order = list(reversed(self._managers))
        logger.info("disposing managers: %s", ", ".join(order))
        for attr in order:
            try:
                self._managers[attr].dispose()
            except Exception:
                # Shutdown must reach every manager; one failing dispose is logged, not fatal.
                logger.exception("dispose of manager %s raised", attr)


def _version() -> str:
    from core import __version__

    return __version__


def _current() -> AppManager:
    return cast(AppManager, current_app.extensions["keel"])


app_manager: AppManager = cast(AppManager, LocalProxy(_current))
