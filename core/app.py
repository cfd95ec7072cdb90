"""``create_app()``: settings, logging, the AppManager, the HTTP pipeline, modules, actions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from config import load_settings
from core import http
from core.app_manager import AppManager
from core.cli import register_cli
from core.http import limits as http_limits
from core.http import metrics
from core.logs import configure_logging
from core.websocket import events as websocket_events

logger = logging.getLogger("keel")


def _vault_factory(sources: list[Any]) -> Any:
    """``VaultManager.settings_source``, remembering the source it builds so that the running
    VaultManager adopts it (one login and one read at start), or ``None`` without Vault support."""
    try:
        from core.managers.vault import VaultManager
    except ModuleNotFoundError:
        return None

    def factory(partial_settings: Any) -> Any:
        source = VaultManager.settings_source(partial_settings)
        sources.append(source)
        return source

    return factory


def create_app(config_overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None) -> Flask:
    """Build a Keel application.

    ``config_overrides`` win over every other source (tests, embedding); ``env`` replaces
    ``os.environ`` as the environment source (tests). Raises :class:`core.errors.ConfigError`
    or :class:`core.errors.ModuleError` when the app cannot start.
    """
    vault_sources: list[Any] = []
    try:
        settings = load_settings(config_overrides, env, vault_factory=_vault_factory(vault_sources))
    except BaseException:
        for source in vault_sources:
            source.close()
        raise
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"], settings["LOG_FILE"])
    app = Flask("keel")
    app.config.update(DEBUG=settings["DEBUG"], MAX_CONTENT_LENGTH=settings["MAX_CONTENT_LENGTH"])
    if vault_sources:
        from core.managers.vault import BOOTSTRAP_KEY

        app.extensions[BOOTSTRAP_KEY] = vault_sources[-1]
    http.install(app, settings)
    try:
        am = AppManager(app, settings)
    except BaseException:
        for source in vault_sources:  # not adopted by a VaultManager yet
            source.close()
        raise
    http_limits.install(app, am.limiter)  # the limiter's steps, before the metrics' one
    metrics.install(app)
    websocket_events.install(app)  # Socket.IO events: they use the HTTP guard, so installed here
    try:
        register_cli(app)
        am.start()
    except BaseException:
        # The start failed after managers were built: release their connections and threads
        # before the error propagates (the caller never gets an app to dispose).
        am.dispose()
        raise
    logger.info(
        "keel %s started (env=%s, modules=%s)",
        am.version,
        settings["APP_ENV"],
        ",".join(m["name"] for m in am.modules.info() if m["state"] == "started") or "none",
    )
    return app
