"""SPEC §4.4: calling an action — routing, parameters, the envelope, errors (never a 500 for
bad input)."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture
def app(actions_app: Any) -> Any:
    return actions_app()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["success"] is False
    assert set(body) == {"success", "error", "request_id"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return dict(body["error"])


def params_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return dict(response.get_json()["result"]["params"])


# --- success -------------------------------------------------------------------------------


def test_success_envelope_defaults_and_context(client: Any) -> None:
    response = client.get("/actions/echo?title=hello", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "success": True,
        "action": "echo",
        "result": {
            "params": {"title": "hello", "priority": 3, "tags": []},
            "identity": "ip:127.0.0.1",
            "action": "echo",
        },
        "request_id": "req-1",
    }


def test_query_strings_are_converted_to_declared_types(client: Any) -> None:
    params = params_of(client.get("/actions/echo?title=t&priority=5&done=true&ratio=0.5&tags=a&tags=b"))
    assert params == {"title": "t", "priority": 5, "done": True, "ratio": 0.5, "tags": ["a", "b"]}
    for raw, value in (("1", True), ("0", False), ("FALSE", False)):
        assert params_of(client.get(f"/actions/echo?title=t&done={raw}"))["done"] is value


def test_json_body_is_not_converted(client: Any) -> None:
    body = {"title": "t", "priority": 2, "meta": {"a": 1}, "ratio": None, "due": "2025-01-31T12:00:00Z"}
    assert params_of(client.post("/actions/echo", json=body)) == {**body, "tags": []}
    error = error_of(client.post("/actions/echo", json={"title": "t", "priority": "2"}), 400, "validation_error")
    assert error["details"] == [{"param": "priority", "message": "must be an integer"}]


def test_handler_can_answer_201(client: Any) -> None:
    response = client.post("/actions/create", json={"anything": 1})
    assert response.status_code == 201
    assert response.get_json()["result"] == {"id": 1, "anything": 1}


def test_path_parameters(client: Any) -> None:
    assert params_of(client.get("/actions/item/items/42")) == {"item_id": 42}
    assert client.delete("/actions/item/items/7").get_json()["result"]["params"] == {"item_id": 7}
    error_of(client.get("/actions/item/items/abc"), 404, "not_found")
    error_of(client.get("/actions/item"), 404, "not_found")  # the path is required
    error_of(client.get("/actions/echo/extra"), 404, "not_found")  # echo takes none
    error = error_of(client.get("/actions/item/items/1?item_id=2"), 400, "validation_error")
    assert error["details"][0]["param"] == "item_id"


# --- routing -------------------------------------------------------------------------------


def test_unknown_action_is_404_without_fuzzy_matching(client: Any) -> None:
    for name in ("nope", "ech", "echo_", "ECHO", "echoo"):
        error_of(client.get(f"/actions/{name}"), 404, "not_found")


def test_undeclared_method_is_405_with_allow(client: Any) -> None:
    response = client.get("/actions/create")
    error_of(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"
    error_of(client.put("/actions/echo", json={"title": "x"}), 405, "method_not_allowed")


def test_action_of_a_failed_module_is_503(client: Any) -> None:
    response = client.get("/actions/broken_ping")
    error_of(response, 503, "service_unavailable")
    assert "Retry-After" in response.headers


def test_non_public_action_without_credentials_is_401(client: Any) -> None:
    response = client.get("/actions/private_echo?title=x")
    error_of(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_order_of_checks(client: Any, modules_dir: Any, actions_dir: Any, app: Any) -> None:
    """route (404, 405) → module running (503) → authentication (401) → parameters (400)."""
    from .conftest import write

    write(
        actions_dir / "more.yaml",
        "version: 1\nactions:\n  broken_private:\n    handler: broken.ping\n    methods: [POST]\n",
    )
    app.extensions["keel"].actions.reload()
    bad_params = {"title": 5, "nope": 1}
    error_of(client.post("/actions/nope", json=bad_params), 404, "not_found")
    error_of(client.get("/actions/broken_private"), 405, "method_not_allowed")  # before 503 and 401
    error_of(client.post("/actions/broken_private", json=bad_params), 503, "service_unavailable")  # before 401
    error_of(client.post("/actions/private_echo", json=bad_params), 401, "unauthorized")  # before 400
    error_of(client.post("/actions/echo", json=bad_params), 400, "validation_error")


# --- handler errors ------------------------------------------------------------------------


def test_handler_keel_error_maps_to_its_status(client: Any) -> None:
    error = error_of(client.get("/actions/missing"), 404, "not_found")
    assert error["message"] == "no such thing"


def test_handler_crash_is_generic_500(client: Any, caplog: Any) -> None:
    response = client.get("/actions/boom", headers={"X-Request-ID": "crash-1"})
    error = error_of(response, 500, "internal_error")
    assert "do-not-leak" not in response.get_data(as_text=True)
    assert error["details"] is None
    assert any(r.exc_info and "do-not-leak-this-detail" in str(r.exc_info[1]) for r in caplog.records)


def test_action_executed_hook(app: Any, client: Any) -> None:
    seen: list[dict[str, Any]] = []
    app.extensions["keel"].hooks.register("action_executed", lambda **data: seen.append(data))
    client.get("/actions/echo?title=x")
    client.get("/actions/missing")
    assert [(d["name"], d["status"], d["identity"]) for d in seen] == [
        ("echo", 200, "ip:127.0.0.1"),
        ("missing", 404, "ip:127.0.0.1"),
    ]
    assert all(d["duration_ms"] >= 0 for d in seen)


# --- bad input: every one a 4xx with the error shape -------------------------------------


@pytest.mark.parametrize(
    ("url", "body", "details"),
    [
        ("/actions/echo", {}, [{"param": "title", "message": "is required"}]),
        ("/actions/echo", {"title": None}, [{"param": "title", "message": "must not be null (expected a string)"}]),
        ("/actions/echo", {"title": 5}, [{"param": "title", "message": "must be a string"}]),
        ("/actions/echo", {"title": "t", "priority": 9}, [{"param": "priority", "message": "must be <= 5"}]),
        ("/actions/echo", {"title": "t", "priority": 0}, [{"param": "priority", "message": "must be >= 1"}]),
        ("/actions/echo", {"title": "x" * 21}, [{"param": "title", "message": "must be at most 20 characters long"}]),
        ("/actions/echo", {"title": ""}, [{"param": "title", "message": "must be at least 1 characters long"}]),
        ("/actions/echo", {"title": "t", "extra": 1}, [{"param": "extra", "message": "unknown parameter"}]),
        (
            "/actions/echo",
            {"title": "t", "tags": ["a", 1, "x" * 9]},
            [
                {"param": "tags[1]", "message": "must be a string"},
                {"param": "tags[2]", "message": "must be at most 8 characters long"},
            ],
        ),
        (
            "/actions/echo",
            {"title": "t", "tags": ["a", "b", "c", "d"]},
            [{"param": "tags", "message": "must have at most 3 items"}],
        ),
        ("/actions/echo", {"title": "t", "meta": {}}, [{"param": "meta.a", "message": "is required"}]),
        ("/actions/echo", {"title": "t", "meta": {"a": "1"}}, [{"param": "meta.a", "message": "must be an integer"}]),
        (
            "/actions/echo",
            {"title": "t", "due": "tomorrow"},
            [{"param": "due", "message": "must be a date-time (RFC 3339, e.g. 2025-01-31T12:00:00Z)"}],
        ),
        ("/actions/echo", {"title": "t", "done": "yes"}, [{"param": "done", "message": "must be a boolean"}]),
        ("/actions/echo", {"title": "t", "priority": 2.5}, [{"param": "priority", "message": "must be an integer"}]),
        ("/actions/echo", {"title": "t", "priority": True}, [{"param": "priority", "message": "must be an integer"}]),
        (
            "/actions/echo?title=a",
            {"title": "b"},
            [{"param": "title", "message": "given in two places (path, query, body); give it once"}],
        ),
    ],
)
def test_invalid_parameters_are_400_with_details(
    client: Any, url: str, body: Any, details: list[dict[str, str]]
) -> None:
    error = error_of(client.post(url, json=body), 400, "validation_error")
    assert error["details"] == details


def test_all_violations_reported_together(client: Any) -> None:
    error = error_of(
        client.get("/actions/echo?priority=abc&done=maybe&tags=a&tags=b&tags=c&tags=d&zzz=1"), 400, "validation_error"
    )
    assert error["details"] == [
        {"param": "priority", "message": "must be an integer"},
        {"param": "done", "message": "must be a boolean (true, false, 1 or 0)"},
        {"param": "zzz", "message": "unknown parameter"},
        {"param": "title", "message": "is required"},
        {"param": "tags", "message": "must have at most 3 items"},
    ]


def test_repeated_query_parameter_is_400_unless_array(client: Any) -> None:
    error = error_of(client.get("/actions/echo?title=a&title=b"), 400, "validation_error")
    assert error["details"] == [{"param": "title", "message": "given 2 times; give it once"}]


def test_object_parameter_cannot_come_from_the_query_string(client: Any) -> None:
    error = error_of(client.get("/actions/echo?title=a&meta=x"), 400, "validation_error")
    assert error["details"][0]["param"] == "meta"


def test_huge_integer_in_query_is_a_validation_error(client: Any) -> None:
    error = error_of(client.get("/actions/echo?title=a&priority=" + "9" * 5000), 400, "validation_error")
    assert error["details"] == [{"param": "priority", "message": "must be an integer"}]


@pytest.mark.parametrize("body", ["[1, 2]", '"title"', "42", "null", "true"])
def test_body_that_is_not_an_object_is_400(client: Any, body: str) -> None:
    error_of(client.post("/actions/echo", data=body, content_type="application/json"), 400, "bad_request")


@pytest.mark.parametrize("body", ['{"title": ', "{'title': 'x'}", '{"title": "x",}', "\xff\xfe"])
def test_malformed_json_is_400(client: Any, body: str) -> None:
    error_of(client.post("/actions/echo", data=body, content_type="application/json"), 400, "bad_request")


def test_repeated_key_in_json_body_is_400(client: Any) -> None:
    body = '{"title": "a", "title": "b"}'
    error = error_of(client.post("/actions/echo", data=body, content_type="application/json"), 400, "bad_request")
    assert error["message"] == "The JSON body has the key 'title' more than once."
    nested = '{"title": "a", "meta": {"a": 1, "a": 2}}'
    error_of(client.post("/actions/echo", data=nested, content_type="application/json"), 400, "bad_request")


def test_non_finite_numbers_rejected(client: Any) -> None:
    error = error_of(
        client.post("/actions/echo", data='{"title": "t", "ratio": NaN}', content_type="application/json"),
        400,
        "validation_error",
    )
    assert error["details"] == [{"param": "ratio", "message": "must be a number or null"}]


def test_non_json_content_type_is_415(client: Any) -> None:
    error_of(
        client.post("/actions/echo", data="title=x", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )
    error_of(client.post("/actions/echo", data="title", content_type="text/plain"), 415, "unsupported_media_type")


def test_empty_post_body_means_no_parameters(client: Any) -> None:
    error = error_of(client.post("/actions/echo"), 400, "validation_error")
    assert error["details"] == [{"param": "title", "message": "is required"}]
    assert client.post("/actions/echo?title=q").status_code == 200


def test_json_nested_10000_deep_is_400(client: Any) -> None:
    body = '{"title": "t", "meta": ' + "[" * 10_000 + "]" * 10_000 + "}"
    error_of(client.post("/actions/echo", data=body, content_type="application/json"), 400, "bad_request")
    deep_object = '{"title": "t", "meta": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}"
    error_of(client.post("/actions/echo", data=deep_object, content_type="application/json"), 400, "bad_request")


def test_ten_megabyte_body_is_413(client: Any) -> None:
    body = json.dumps({"title": "x" * (10 * 1024 * 1024)})
    error_of(client.post("/actions/echo", data=body, content_type="application/json"), 413, "payload_too_large")
