"""``create_app()``: settings, logging, the AppManager, the HTTP pipeline, modules, actions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from config import load_settings
from core import http, metrics
from core.app_manager import AppManager
from core.logs import configure_logging

logger = logging.getLogger("keel")


def _vault_factory() -> Any:
    try:
        from core.managers.vault import VaultManager
    except ModuleNotFoundError:
        return None
    return VaultManager.settings_source


def create_app(config_overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None) -> Flask:
    """Build a Keel application.

    ``config_overrides`` win over every other source (tests, embedding); ``env`` replaces
    ``os.environ`` as the environment source (tests). Raises :class:`core.errors.ConfigError`
    or :class:`core.errors.ModuleError` when the app cannot start.
    """
    settings = load_settings(config_overrides, env, vault_factory=_vault_factory())
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"], settings["LOG_FILE"])
    app = Flask("keel")
    app.config.update(
        DEBUG=settings["DEBUG"],
        MAX_CONTENT_LENGTH=settings["MAX_CONTENT_LENGTH"],
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    http.install(app)
    am = AppManager(app, settings)
    metrics.install(app)
    am.modules.load(app, am)
    if hasattr(am, "actions"):
        am.actions.load()
    from core.cli import register_cli

    register_cli(app)
    am.hooks.trigger("app_started", app_manager=am)
    logger.info(
        "keel %s started (env=%s, modules=%s)",
        am.version,
        settings["APP_ENV"],
        ",".join(m["name"] for m in am.modules.info() if m["state"] == "started") or "none",
    )
    return app
