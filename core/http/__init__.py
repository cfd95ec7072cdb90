"""The request pipeline: request id, JSON errors, health, security headers; the framework's routes."""

from __future__ import annotations

from flask import Flask

from config import Settings
from core.http import admin, body, cors, dispatch, docs, errors, health
from core.http.pipeline import Pipeline


def install(app: Flask, settings: Settings) -> None:
    # No redirect may answer before the pipeline or reflect a Host header: `//x` is not merged
    # into `/x` (404 instead of a 308) and `/docs/` is served like `/docs` (no slash redirect).
    app.json = body.JSONProvider(app)  # request.get_json() anywhere uses the one body parser
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    # TRUSTED_HOSTS is checked by the pipeline, not by Flask: the probes (/healthz, /ready,
    # /metrics) answer whatever Host a kubelet, Docker or Prometheus sends.
    pipe = Pipeline(app, settings["HSTS_SECONDS"], settings["TRUSTED_HOSTS"])  # managers add their steps to it
    cors.install(pipe, settings["CORS_ORIGINS"])  # first: a preflight is answered before limits and auth
    errors.install(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(dispatch.bp)  # /actions, /openapi.json
    app.register_blueprint(docs.bp)  # /docs
    admin.install(app, settings)  # /admin
