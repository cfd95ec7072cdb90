"""Swagger UI over ``/openapi.json``, served from local assets (SPEC §4.5: works with no internet)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, request, send_from_directory

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
<link rel="stylesheet" href="{assets}swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}swagger-ui-bundle.js"></script>
<script src="{assets}swagger-ui-standalone-preset.js"></script>
<script src="{assets}keel-init.js"></script>
</body>
</html>
"""
# Relative URLs (no Host or prefix is ever written into the page), one page for each of the two
# URLs it is served at: /docs (its assets are docs/...) and /docs/ (its assets are ...).
_PAGES = {False: _DOCS_HTML.format(assets="docs/"), True: _DOCS_HTML.format(assets="")}

# The document is found from this script's own URL (/docs/keel-init.js), whichever page loaded it.
_INIT_JS = """var keelSpec = new URL("openapi.json", new URL("..", document.currentScript.src)).href;
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: keelSpec,
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
    return Response(_PAGES[request.path.endswith("/")], mimetype="text/html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str) -> Response:
    if filename == "keel-init.js":
        return Response(_INIT_JS, mimetype="application/javascript")
    if filename not in _ASSETS:
        raise NotFound()
    return send_from_directory(_swagger_dir(), filename, max_age=3600)
