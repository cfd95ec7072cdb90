"""SPEC §4.5 discovery and docs, and the ``flask actions`` / ``flask openapi`` CLI (§4.2, §13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from .conftest import GOOD_DEMO, write

SECRET_ACTION = (
    "  login_like:\n    handler: echo\n    methods: [POST]\n    auth: public\n    deprecated: true\n"
    "    params:\n      token: {type: string, secret: true, default: s3cr3t-default}\n"
    "      level: {type: integer, default: 2, enum: [1, 2]}\n"
    "    returns: {type: object, properties: {params: {type: object}}}\n"
    "    examples: [{description: minimal, params: {level: 1}}]\n"
)


@pytest.fixture
def app(actions_app: Any) -> Any:
    return actions_app(files={"demo.yaml": GOOD_DEMO + SECRET_ACTION})


def test_actions_listing_is_public_metadata(app: Any) -> None:
    body = app.test_client().get("/actions").get_json()
    assert body["success"] is True
    by_name = {a["name"]: a for a in body["actions"]}
    assert body["count"] == len(by_name) == 8
    assert by_name["item"] == {
        "name": "item",
        "module": "demo",
        "description": "",
        "methods": ["GET", "DELETE"],
        "path": "items/<int:item_id>",
        "auth": "public",
        "roles": [],
        "scopes": [],
        "rate_limit": None,
        "params": {"item_id": {"type": "integer", "required": True, "in": "path"}},
        "additional_params": False,
        "deprecated": False,
        "status": "available",  # "disabled" when its module is disabled or not running (hardening 19)
    }
    login = by_name["login_like"]
    assert login["params"]["token"] == {"type": "string", "required": False, "secret": True}
    assert login["params"]["level"]["default"] == 2
    assert "s3cr3t-default" not in json.dumps(body)


def test_openapi_document_is_valid_31_and_complete(app: Any) -> None:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    validate(doc)  # the official OpenAPI 3.1 schema
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    paths = doc["paths"]
    assert set(paths["/actions/item/items/{item_id}"]) == {"get", "delete"}
    assert paths["/actions/item/items/{item_id}"]["get"]["parameters"] == [
        {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    ]
    echo_get = paths["/actions/echo"]["get"]
    assert echo_get["security"] == []
    assert {p["name"] for p in echo_get["parameters"]} == {"title", "priority", "tags", "done", "ratio", "due"}
    body = paths["/actions/echo"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["title"] and body["additionalProperties"] is False
    assert body["properties"]["ratio"]["type"] == ["number", "null"]
    assert paths["/actions/private_echo"]["get"]["security"] == [{"bearerAuth": []}, {"apiKey": []}]
    login = paths["/actions/login_like"]["post"]
    assert login["deprecated"] is True
    assert login["requestBody"]["content"]["application/json"]["schema"]["properties"]["token"]["writeOnly"] is True
    assert "s3cr3t-default" not in json.dumps(doc)
    # Every other route is there too.
    assert "/healthz" in paths and "/health" in paths and "/actions" in paths and "/openapi.json" in paths


def test_docs_page_uses_local_assets_only(app: Any) -> None:
    client = app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html
    for asset in (
        "docs/swagger-ui.css",
        "docs/swagger-ui-bundle.js",
        "docs/swagger-ui-standalone-preset.js",
        "docs/keel-init.js",
    ):
        assert asset in html
        with client.get("/" + asset) as response:
            assert response.status_code == 200, asset
            assert len(response.data) > 40
    assert b"openapi.json" in client.get("/docs/keel-init.js").data
    # Swagger UI 5 is the first major version that reads OpenAPI 3.1.
    from core.http.docs import _swagger_dir

    assert (_swagger_dir() / "VERSION").read_text().strip().startswith("v5.")
    assert client.get("/docs/../../etc/passwd").status_code == 404
    assert client.get("/docs/index.html").status_code == 404


# --- CLI -----------------------------------------------------------------------------------


def test_cli_list_and_show(app: Any) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["actions", "list"])
    assert result.exit_code == 0
    assert "item" in result.output and "/actions/item/items/<int:item_id>" in result.output
    assert "8 actions from 2 files" in result.output
    shown = runner.invoke(args=["actions", "show", "item"])
    assert shown.exit_code == 0
    info = json.loads(shown.output)
    assert info["handler"] == "demo.echo" and info["defined_at"].endswith("demo.yaml:21:3")
    missing = runner.invoke(args=["actions", "show", "ech"])
    assert missing.exit_code == 1 and "no action named 'ech'" in missing.output


def test_cli_validate_ok(app: Any) -> None:
    result = app.test_cli_runner().invoke(args=["actions", "validate"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "OK: 2 file(s), 8 action(s)"


def test_cli_validate_paths_with_errors(app: Any, tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml", "version: 1\nmodule: demo\nactions:\n  x:\n    handler: echo\n    auth: nobody\n"
    )
    good = write(tmp_path / "good.yaml", "version: 1\nmodule: demo\nactions:\n  y:\n    handler: echo\n")
    clash = write(tmp_path / "clash.yaml", "version: 1\nmodule: demo\nactions:\n  echo:\n    handler: echo\n")
    result = app.test_cli_runner().invoke(args=["actions", "validate", str(bad), str(good), str(clash)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0] == f"{bad}:6:11: auth: 'nobody' is not one of public, user, api_key, any"
    assert lines[1].startswith(f"{clash}:4:3: actions.echo: action 'echo' is also defined in ")
    assert lines[-1] == "2 error(s) in 3 file(s)"
    ok = app.test_cli_runner().invoke(args=["actions", "validate", str(good)])
    assert ok.exit_code == 0 and ok.output.strip() == "OK: 1 file(s), 1 action(s)"


def test_cli_validate_shipped_files(make_app: Any) -> None:
    """The files shipped in the repository (actions/ and modules/*/actions.yaml) are valid."""
    app = make_app()
    result = app.test_cli_runner().invoke(args=["actions", "validate"])
    assert result.exit_code == 0, result.output
    assert app.extensions["keel"].actions.get("system_info") is not None
    assert "actions/system.yaml" in [f["path"] for f in app.extensions["keel"].actions.status()["files"]]


def test_cli_openapi_output(app: Any, tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    result = app.test_cli_runner().invoke(args=["openapi", "--output", str(out)])
    assert result.exit_code == 0, result.output
    validate(json.loads(out.read_text()))
