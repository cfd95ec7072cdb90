"""The request pipeline: request id, JSON errors, health, security headers."""

from __future__ import annotations

from flask import Flask

from core.http import errors, health
from core.http.pipeline import Pipeline


def install(app: Flask) -> None:
    Pipeline(app)  # the one before_request/after_request pair; managers add their steps to it
    errors.install(app)
    app.register_blueprint(health.bp)
