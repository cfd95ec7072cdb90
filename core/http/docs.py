"""Swagger UI over ``/openapi.json``, served from local assets (SPEC §4.5: works with no internet)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from core.errors import NotFound

bp = Blueprint("keel_docs", __name__)


def _swagger_dir() -> Path:
    """Swagger UI 5 (the first to read OpenAPI 3.1), as bundled by the flask-swagger-ui package;
    only its static files are used."""
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).parent / "dist"


_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Keel API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/swagger-ui-standalone-preset.js"></script>
<script src="docs/keel-init.js"></script>
</body>
</html>
"""

_INIT_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""

_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"})


@bp.get("/docs")
def docs() -> Response:
    """Swagger UI over ``/openapi.json``, from local assets (no CDN: works with no internet)."""
    return Response(_DOCS_HTML, mimetype="text/html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str) -> Response:
    if filename == "keel-init.js":
        return Response(_INIT_JS, mimetype="application/javascript")
    if filename not in _ASSETS:
        raise NotFound()
    return send_from_directory(_swagger_dir(), filename, max_age=3600)
