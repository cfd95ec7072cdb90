"""AppManager: a registry of managers and a lifecycle, nothing else (DESIGN habit 2).

``create_app()`` builds one per application and stores it in ``app.extensions["keel"]``;
``core.app_manager`` is a proxy to the current app's one. Managers are created in dependency
order, find each other through it (``am.redis``, ``am.db``, ...), and are disposed in reverse.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, cast

from flask import Flask, current_app
from werkzeug.local import LocalProxy

from config import Settings
from core.errors import SetupError
from core.managers.actions import ActionManager
from core.managers.api_keys import ApiKeyManager
from core.managers.base import Manager
from core.managers.crypto import CryptoManager
from core.managers.database import DatabaseManager
from core.managers.hooks import HooksManager
from core.managers.jwt import JWTManager
from core.managers.modules import ModuleManager
from core.managers.rate_limit import RateLimiterManager
from core.managers.redis import RedisManager
from core.managers.services import ServicesManager
from core.managers.state import StateManager
from core.managers.vault import VaultManager
from core.managers.websocket import WebSocketManager
from core.version import __version__

logger = logging.getLogger(__name__)


class AppManager:
    """Holds the settings and the managers of one Flask app, in dependency order: each
    manager's ``init_app`` may use the ones declared above it (see core/managers/base.py)."""

    hooks: HooksManager
    services: ServicesManager
    vault: VaultManager
    redis: RedisManager
    db: DatabaseManager
    crypto: CryptoManager
    state: StateManager
    jwt: JWTManager
    api_keys: ApiKeyManager
    limiter: RateLimiterManager
    websocket: WebSocketManager
    actions: ActionManager
    modules: ModuleManager

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.version = __version__
        self._managers: dict[str, Manager] = {}
        self._disposed = False
        self._dispose_lock = threading.Lock()
        # Not a reference that keeps the app alive: only to ask whether it has served yet.
        self._app = weakref.ref(app)
        app.extensions["keel"] = self
        try:
            self.hooks = self._declare(app, "hooks", HooksManager())
            self.services = self._declare(app, "services", ServicesManager())
            self.vault = self._declare(app, "vault", VaultManager())
            self.redis = self._declare(app, "redis", RedisManager())
            self.db = self._declare(app, "db", DatabaseManager())
            self.crypto = self._declare(app, "crypto", CryptoManager())
            self.state = self._declare(app, "state", StateManager())
            self.jwt = self._declare(app, "jwt", JWTManager())
            self.api_keys = self._declare(app, "api_keys", ApiKeyManager())
            self.limiter = self._declare(app, "limiter", RateLimiterManager())
            self.websocket = self._declare(app, "websocket", WebSocketManager())
            self.actions = self._declare(app, "actions", ActionManager())
            self.modules = self._declare(app, "modules", ModuleManager())
        except BaseException:
            # The start is stopped: release what was declared so far, in reverse order.
            self._dispose_managers()
            raise

    def _declare(self, app: Flask, attr: str, manager: Any) -> Any:
        # Registered once its init_app succeeded: init_app starts nothing (no threads, no
        # network), so a manager whose init_app raised has nothing to dispose.
        manager.init_app(app, self)
        self._managers[attr] = manager
        return manager

    def start(self) -> None:
        """``start()`` every manager in order (once all are declared), then ``app_started``."""
        for manager in self._managers.values():
            manager.start()
        self.hooks.trigger("app_started", app_manager=self)

    def check_setup(self, what: str) -> None:
        """Raise :class:`SetupError` once the app has served its first request: registrations
        (services, state machines, modules, routes) happen while the app is built, so that
        every worker serves the same thing (DESIGN habit 3; Flask's ``@setupmethod``)."""
        app = self._app()
        if app is not None and app._got_first_request:
            raise SetupError(
                f"{what} can no longer be called: the app has already served a request. "
                "Register it while the app is built (in a module's initialize() or in init_app)."
            )

    @property
    def managers(self) -> dict[str, Manager]:
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


def _current() -> AppManager:
    return cast(AppManager, current_app.extensions["keel"])


app_manager: AppManager = cast(AppManager, LocalProxy(_current))
