"""``@protect``: a route guarded, validated and documented like an action, from one declaration;
and the one JSON body parser every route shares (SPEC §3, §4.4)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify

from core import ActionContext, Conflict, protect
from core.errors import ActionDefinitionError
from tests.conftest import ROOT

PASSWORD = "correct horse battery"


def token(app: Flask, username: str, roles: tuple[str, ...] = ("user",)) -> dict[str, str]:
    am = app.extensions["keel"]
    user = am.jwt.users.create(username, PASSWORD, roles=roles)
    return {"Authorization": f"Bearer {am.jwt.issue_pair(user)['access_token']}"}


def error_code(response: Any) -> str:
    body = response.get_json()
    assert body["success"] is False and set(body) == {"success", "error", "request_id"}, body
    return str(body["error"]["code"])


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Flask:
    """An app with a few protected routes of its own."""
    app: Flask = make_app(LOG_LEVEL="WARNING", RATE_LIMIT_USER="1000/minute", BAN_AFTER_VIOLATIONS=1000)
    seen: list[tuple[dict[str, Any], ActionContext]] = []
    app.config["seen"] = seen

    @app.post("/p/editors/<int:board>")
    @protect(
        auth="user",
        roles=["editor"],
        rate_limit="3/minute",
        status=201,
        params={
            "title": {"type": "string", "required": True, "maxLength": 20},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5, "default": 3},
        },
    )
    def add_card(params: dict[str, Any], ctx: ActionContext) -> Any:
        """Add a card to a board.

        Longer text for the docs."""
        seen.append((params, ctx))
        return {"card": params}

    @app.get("/p/search")
    @protect(
        auth="any",
        params={
            "q": {"type": "string", "required": True},
            "limit": {"type": "integer", "minimum": 1, "default": 10},
            "tags": {"type": "array", "items": {"type": "string"}},
            "token": {"type": "string", "secret": True},
        },
        summary="Search",
    )
    def search(params: dict[str, Any], ctx: ActionContext) -> Any:
        return {"params": params, "identity": ctx.identity, "action": ctx.action}

    @app.route("/p/shapes/<kind>", methods=["GET", "POST"])
    @protect(auth="public", additional_params=True, name="shapes")
    def shapes(params: dict[str, Any], ctx: ActionContext) -> Any:
        kind = params["kind"]
        if kind == "tuple":
            return {"made": True}, 202
        if kind == "status":
            ctx.status = 203
            return {"set": True}
        if kind == "none":
            return None
        if kind == "response":
            return jsonify(["raw"])
        if kind == "conflict":
            raise Conflict("Already there.", details={"kind": kind})
        if kind == "list":
            return ["not", "a", "dict"]
        return {"params": params}

    return app


def test_checks_come_in_spec_order(app: Flask) -> None:
    """ban → authentication → authorization → rate limit → parameters → view."""
    client = app.test_client()
    editor = token(app, "eddie", ("user", "editor"))
    plain = token(app, "plain")
    bad_body = {"title": "x" * 21, "priority": 9, "extra": 1}

    assert error_code(client.post("/p/editors/1", json=bad_body)) == "unauthorized"  # before 400
    assert error_code(client.post("/p/editors/1", json=bad_body, headers=plain)) == "forbidden"
    invalid = client.post("/p/editors/1", json=bad_body, headers=editor)
    assert invalid.status_code == 400 and error_code(invalid) == "validation_error"
    assert invalid.get_json()["error"]["details"] == [
        {"param": "extra", "message": "unknown parameter"},
        {"param": "title", "message": "must be at most 20 characters long"},
        {"param": "priority", "message": "must be <= 5"},
    ]
    ok = client.post("/p/editors/7", json={"title": "Write"}, headers=editor)
    assert ok.status_code == 201
    assert ok.get_json() == {
        "success": True,
        "card": {"board": 7, "title": "Write", "priority": 3},
        "request_id": ok.headers["X-Request-ID"],
    }
    assert ok.headers["X-RateLimit-Limit"] == "3"
    limited = client.post("/p/editors/1", json={"title": "again"}, headers=editor)  # 3rd of 3/minute
    assert limited.status_code == 201
    refused = client.post("/p/editors/1", json=bad_body, headers=editor)
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"  # before 400
    assert int(refused.headers["Retry-After"]) > 0
    am = app.extensions["keel"]
    am.limiter.ban("ip", "127.0.0.1", 30, actor="test")
    for headers in ({}, {"Authorization": "Bearer nope"}, editor):
        banned = client.post("/p/editors/1", json=bad_body, headers=headers)
        assert banned.status_code == 403 and error_code(banned) == "banned"
    params, ctx = app.config["seen"][0]
    assert params == {"board": 7, "title": "Write", "priority": 3}
    assert ctx.user is not None and ctx.user["username"] == "eddie" and ctx.has_role("editor")
    assert ctx.action == "test_protect_add_card" and ctx.claims is not None and ctx.claims["sub"] == "1"


def test_rate_limit_is_per_identity_and_route(app: Flask) -> None:
    client = app.test_client()
    one, two = token(app, "one", ("editor",)), token(app, "two", ("editor",))
    got = [client.post("/p/editors/1", json={"title": "t"}, headers=one).status_code for _ in range(4)]
    assert got == [201, 201, 201, 429]
    assert client.post("/p/editors/1", json={"title": "t"}, headers=two).status_code == 201
    assert client.get("/p/search?q=x", headers=one).status_code == 200  # another route: no limit of its own


def test_query_parameters_are_converted_and_validated(app: Flask) -> None:
    client = app.test_client()
    user = token(app, "quinn")
    body = client.get("/p/search?q=keel&limit=5&tags=a&tags=b", headers=user).get_json()
    assert body["params"] == {"q": "keel", "limit": 5, "tags": ["a", "b"]}
    assert body["identity"] == "user:1" and body["action"] == "test_protect_search"
    bad = client.get("/p/search?limit=zero&limit=2&nope=1", headers=user)
    assert error_code(bad) == "validation_error"
    assert bad.get_json()["error"]["details"] == [
        {"param": "limit", "message": "given 2 times; give it once"},
        {"param": "nope", "message": "unknown parameter"},
        {"param": "q", "message": "is required"},
    ]


def test_answers_and_errors_keep_the_spec_shapes(app: Flask) -> None:
    client = app.test_client()
    tupled = client.get("/p/shapes/tuple")
    assert tupled.status_code == 202 and tupled.get_json()["made"] is True
    assert client.get("/p/shapes/status").status_code == 203
    none = client.post("/p/shapes/none")
    assert none.status_code == 200 and set(none.get_json()) == {"success", "request_id"}
    assert client.get("/p/shapes/response").get_json() == ["raw"]
    conflict = client.get("/p/shapes/conflict")
    assert conflict.status_code == 409 and conflict.get_json()["error"]["details"] == {"kind": "conflict"}
    assert client.get("/p/shapes/list").status_code == 500
    # undeclared path variables and (with additional_params) other parameters reach the view as given
    assert client.post("/p/shapes/echo?a=1", json={"b": [2]}).get_json()["params"] == {
        "kind": "echo",
        "a": "1",
        "b": [2],
    }
    twice = client.post("/p/shapes/echo?kind=x", json={"kind": "y"})
    assert error_code(twice) == "validation_error"
    assert [d["param"] for d in twice.get_json()["error"]["details"]] == ["kind", "kind"]


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "message"),
    [
        (b'{"a": 1, "a": 2}', "application/json", 400, "The JSON body has the key 'a' more than once."),
        (b'{"a": {"b": 1, "b": 2}}', "application/json", 400, "The JSON body has the key 'b' more than once."),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "it is nested too deeply"),
        (b'{"a": "x\\u0000y"}', "application/json", 400, "NUL character"),
        (b'{"a\\u0000": 1}', "application/json", 400, "NUL character"),
        (b'{"a": [{"b": ["\\u0000"]}]}', "application/json", 400, "NUL character"),
        (b'{"a": "x\x00y"}', "application/json", 400, "it is not valid JSON"),  # a raw NUL
        (b'{"a": ', "application/json", 400, "it is not valid JSON"),
        (b"\xff\xfe{}", "application/json", 400, "it is not valid JSON"),
        (b"[1, 2]", "application/json", 400, "must be an object"),
        (b"a=1", "application/x-www-form-urlencoded", 415, "must be JSON"),
        (b"{}", "text/plain", 415, "must be JSON"),
    ],
)
def test_one_body_parser(app: Flask, raw: bytes, content_type: str, status: int, message: str) -> None:
    response = app.test_client().post("/p/shapes/echo", data=raw, content_type=content_type)
    assert response.status_code == status, response.get_json()
    assert message in response.get_json()["error"]["message"]


def test_body_parser_accepts_what_only_looks_like_nul(app: Flask) -> None:
    client = app.test_client()
    escaped = client.post("/p/shapes/echo", data=b'{"a": "\\\\u0000"}', content_type="application/json")
    assert escaped.status_code == 200 and escaped.get_json()["params"]["a"] == "\\u0000"
    utf16 = '{"a": "é"}'.encode("utf-16")
    assert client.post("/p/shapes/echo", data=utf16, content_type="application/json").get_json()["params"]["a"] == "é"
    assert client.post("/p/shapes/echo", data=b"", content_type="application/json").status_code == 200


def test_openapi_entry_comes_from_the_declaration(app: Flask) -> None:
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    post = paths["/p/editors/{board}"]["post"]
    assert post["summary"] == "Add a card to a board."
    assert post["description"] == "Add a card to a board.\n\nLonger text for the docs."
    assert post["security"] == [{"bearerAuth": []}]
    assert post["x-keel-roles"] == ["editor"] and post["x-keel-rate-limit"] == ["3/minute"]
    assert set(post["responses"]) == {"201", "default"}
    assert post["parameters"] == [{"name": "board", "in": "path", "required": True, "schema": {"type": "integer"}}]
    assert post["requestBody"] == {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "maxLength": 20},
                        "priority": {"type": "integer", "minimum": 1, "maximum": 5, "default": 3},
                    },
                    "required": ["title"],
                    "additionalProperties": False,
                }
            }
        },
    }
    get = paths["/p/search"]["get"]
    assert get["summary"] == "Search"
    assert get["security"] == [{"bearerAuth": []}, {"apiKey": []}]
    assert "requestBody" not in get
    by_name = {p["name"]: p for p in get["parameters"]}
    assert by_name["q"] == {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}
    assert by_name["tags"]["explode"] is True and by_name["token"]["schema"]["writeOnly"] is True
    assert paths["/p/shapes/{kind}"]["get"]["security"] == []


def view(params: dict[str, Any], ctx: ActionContext) -> Any:
    return params


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        ({"params": {"n": {"type": "int"}}}, "params.n.type: 'int' is not one of string, integer, number"),
        ({"params": {"n": {"type": "integer", "minimun": 1}}}, "params.n.minimun: unknown keyword (did you mean"),
        ({"params": {"n": {"type": "integer", "default": "x"}}}, "params.n.default: default violates"),
        ({"auth": "users"}, "auth: 'users' is not one of public, user, api_key, any (did you mean 'user'?)"),
        ({"rate_limit": "often"}, "rate_limit: 'often' is not"),
        ({"roles": "admin"}, "roles: must be a list of strings"),
        ({"name": "Not Valid"}, "action name 'Not Valid' is not valid"),
        ({"status": 404}, "status must be a 2xx integer, got 404"),
        ({"params": {"n": {"type": "string", "pattern": Path}}}, "declare plain values"),
    ],
)
def test_declarations_are_checked_when_decorating(declaration: dict[str, Any], problem: str) -> None:
    with pytest.raises(ActionDefinitionError) as raised:
        protect(**declaration)(view)
    message = str(raised.value)
    assert message.startswith("@protect on view (tests/core/test_protect.py:"), message
    assert problem in message


def test_view_signature_is_checked_when_decorating() -> None:
    def no_ctx(params: dict[str, Any]) -> Any:
        return params

    with pytest.raises(ActionDefinitionError, match=r"must have the signature \(params, ctx\); it has \(params\)"):
        protect()(no_ctx)


def test_shipped_modules_import_only_cores_public_names() -> None:
    import core

    for init in sorted((ROOT / "modules").glob("*/__init__.py")):
        if init.parent.name == "tasks":
            continue  # still uses core.managers.database.utc_timestamp (not yet exported)
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core"):
                assert node.module == "core", f"{init}: from {node.module} import ..."
                assert {a.name for a in node.names} <= set(core.__all__), init
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("core") for a in node.names), init
