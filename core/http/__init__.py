"""The request pipeline: request id, JSON errors, health, security headers; the framework's routes."""

from __future__ import annotations

from flask import Flask

from core.http import cors, dispatch, docs, errors, health
from core.http.pipeline import Pipeline


def install(app: Flask, cors_origins: list[str]) -> None:
    pipe = Pipeline(app)  # the one before_request/after_request pair; managers add their steps to it
    cors.install(pipe, cors_origins)  # first: a preflight is answered before limits and auth
    errors.install(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(dispatch.bp)  # /actions, /openapi.json
    app.register_blueprint(docs.bp)  # /docs
