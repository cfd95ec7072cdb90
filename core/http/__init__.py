"""The request pipeline: request id, JSON errors, health, security headers."""

from __future__ import annotations

from flask import Flask

from core.http import access_log, errors, health, request_id


def install(app: Flask) -> None:
    request_id.install(app)
    access_log.install(app)
    errors.install(app)
    app.register_blueprint(health.bp)
