"""The one lifecycle every manager follows; AppManager drives it (DESIGN "manager lifecycle").

1. ``__init__()`` takes nothing and builds nothing that needs settings or the network.
2. ``init_app(app, am)`` **declares only**: read ``am.settings``, build the objects the
   settings describe (clients and breakers are built once here, never replaced later),
   declare tables on ``am.db.metadata``, add pipeline steps, routes and hooks. No threads,
   no network. ``am`` holds every manager above this one in ``AppManager.__init__``
   order. A :class:`~core.errors.ConfigError` here stops the start.
3. ``start()`` runs once every manager is declared and the modules are loaded, in registry
   order: open pools, create tables, restore state, start background threads and
   subscriptions. A dependency that is down is logged and reported by ``health()``: the app
   still starts and answers 503 where it needs it.
4. ``health()`` reports ``{"status": "healthy"|"degraded"|"unhealthy", ...}`` and never
   changes state (no breaker probes, no reconnects): background work keeps it current.
5. ``dispose()`` runs in reverse order, stops threads, closes pools; safe to call twice.

A manager reaches another through the ``am`` it is given (``am.redis``, ``am.db``), keeps
that one reference, and never copies another manager's internals. It is stored in
``app.extensions["keel.<name>"]``; the running AppManager is ``app.extensions["keel"]``
(or the proxy :data:`core.app_manager.app_manager`). CLI commands live in ``core/cli/``.

To add a manager: subclass :class:`Manager`, set ``name``, implement the steps above, and
add a typed attribute plus one line in ``AppManager.__init__`` after the managers it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask

if TYPE_CHECKING:
    from core.app_manager import AppManager


class Manager:
    """Base of every manager: a Flask extension with ``start``/``health``/``dispose``."""

    name: ClassVar[str] = ""

    def init_app(self, app: Flask, am: AppManager) -> None:
        app.extensions[f"keel.{self.name}"] = self

    def start(self) -> None:
        """Background work and I/O, once every manager is declared (optional)."""

    def health(self) -> dict[str, Any]:
        return {"status": "healthy"}

    def dispose(self) -> None:
        """Release connections and threads (optional)."""
