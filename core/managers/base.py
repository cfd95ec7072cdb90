"""The shape every manager shares: a Flask extension with health and dispose."""

from __future__ import annotations

from typing import Any, ClassVar

from flask import Flask


class Manager:
    """A Flask extension (``__init__(app=None)`` / ``init_app(app)``).

    The instance is stored in ``app.extensions["keel.<name>"]``; it keeps no reference to the
    app (reach the running one through ``current_app``). ``init_app`` receives the app's
    :class:`~core.app_manager.AppManager` through ``app.extensions["keel"]`` so managers find
    each other through it, never through globals.
    """

    name: ClassVar[str] = ""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.extensions[f"keel.{self.name}"] = self

    def health(self) -> dict[str, Any]:
        """``{"status": "healthy"|"degraded"|"unhealthy", ...}``; never contains secrets."""
        return {"status": "healthy"}

    def dispose(self) -> None:
        """Release connections and threads; called in reverse creation order."""
