"""The request pipeline (core/http/pipeline.py): one hook pair, the same steps in the same order.

The framework's per-request parts (request id, timer, 413, the limiter's route protection and
headers, the metrics, the access log) run from ONE before_request and ONE after_request; these
tests pin what a client sees when a step refuses the request part-way.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import REGISTRY

from core.http.pipeline import pipeline


def requests_counted(label: str, status: int) -> float:
    value = REGISTRY.get_sample_value("keel_requests_total", {"action": label, "status": str(status)})
    return value or 0.0


def test_framework_registers_one_hook_pair(app: Any) -> None:
    assert len(app.before_request_funcs[None]) == 1
    assert len(app.after_request_funcs[None]) == 1
    steps = pipeline(app)
    # the limiter's route protection; its headers, then the metrics (registered after it)
    assert [s.__name__ for s in steps.before] == ["_protect_route"]
    assert [getattr(s, "__name__", type(s).__name__) for s in steps.after] == ["_add_headers", "_RequestCounter"]


def test_a_request_refused_by_the_limiter_step_keeps_every_header(make_app: Any) -> None:
    app = make_app(RATE_LIMIT_IP="2/minute")
    client = app.test_client()
    before = requests_counted("keel_actions.list_actions", 429)
    for _ in range(2):
        assert client.get("/actions").status_code == 200
    refused = client.get("/actions", headers={"X-Request-ID": "trace-42"})
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["error"]["code"] == "rate_limited"
    assert body["request_id"] == refused.headers["X-Request-ID"] == "trace-42"
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"] == '"ip";q=2;w=60'
    assert requests_counted("keel_actions.list_actions", 429) == before + 1


def test_request_ids_are_fresh_and_invalid_ones_replaced(client: Any) -> None:
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id!"}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)


def test_oversize_body_is_refused_before_the_limiter_counts_it(make_app: Any) -> None:
    app = make_app(MAX_CONTENT_LENGTH=100, RATE_LIMIT_IP="1/minute")
    client = app.test_client()
    big = client.post("/actions", data="x" * 200, content_type="application/json")
    assert big.status_code == 413
    assert "X-RateLimit-Limit" not in big.headers  # refused before the limiter step ran
    assert client.get("/actions").status_code == 200  # the 413 did not use the IP's one request


def _flask_response(app: Any, obj: Any) -> Any:
    from flask.json.provider import DefaultJSONProvider

    return DefaultJSONProvider.response(app.json, obj)


def test_json_response_is_flasks(make_app: Any) -> None:
    """Keel's JSON provider reuses its encoder: the same body and headers as Flask's own
    response(), in every layout, and after a setting is changed at run time."""
    app = make_app()
    obj = {"z": 1, "a": ["é", 2.5, None, True], "n": {"k": "<\u2028>"}, "d": __import__("datetime").date(2024, 1, 2)}
    with app.app_context():
        for debug, compact, sort_keys, ensure_ascii in [
            (False, None, False, False),
            (True, None, False, False),
            (False, False, False, False),
            (False, True, True, True),
            (False, None, False, False),
        ]:
            app.debug, app.json.compact = debug, compact
            app.json.sort_keys, app.json.ensure_ascii = sort_keys, ensure_ascii  # type: ignore[attr-defined]
            ours, flask = app.json.response(obj), _flask_response(app, obj)
            assert ours.get_data() == flask.get_data()
            assert list(ours.headers) == list(flask.headers)
            assert ours.status_code == flask.status_code == 200
        app.json.default = lambda o: "custom"  # type: ignore[method-assign]
        assert b'"d":"custom"' in app.json.response(obj).get_data()


def test_security_and_rate_limit_headers_in_order(make_app: Any) -> None:
    """The headers the pipeline adds, as add() would add them (names, values, order)."""
    app = make_app(RATE_LIMIT_IP="100/minute", BAN_EXEMPT_NETWORKS=[])
    response = app.test_client().get("/openapi.json")
    names = [k for k, _ in response.headers]
    wanted = ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit-Policy", "RateLimit"]
    wanted += ["X-Request-ID", "X-Content-Type-Options", "Referrer-Policy"]
    assert [n for n in names if n in wanted] == wanted
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["RateLimit-Policy"] == '"ip";q=100;w=60'
    assert response.headers["RateLimit"] == f'"ip";r={response.headers["X-RateLimit-Remaining"]};t=60'


@pytest.mark.parametrize(
    "query",
    [
        "a=1&b=2&a=3",
        "title=Write+the+profile&priority=2",
        "x=%ZZ&y=%e9t%C3%A9&z=%00",  # invalid escapes, a Latin-1 byte, UTF-8, a NUL
        "blank=&flag&=v&&;semi=1",
        "k%20ey=v%2Bw&k+ey=2",
        "é=ü&%FF=1",
    ],
)
def test_query_values_are_what_request_args_gives(make_app: Any, query: str) -> None:
    """Parameters read from the query string without building ``request.args``: the same names,
    in the same order, with the same values (Werkzeug's parsing)."""
    from flask import request

    from core.http.body import query_values

    app = make_app()
    with app.test_request_context("/x?" + query):
        req = request._get_current_object()  # type: ignore[attr-defined]
        ours = query_values(req)
        assert "args" not in req.__dict__  # request.args was not built
        args = req.args
        assert list(ours) == list(args)
        assert ours == {key: args.getlist(key) for key in args}
        assert query_values(req) == ours  # read from request.args once it is parsed


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "b": [1, 2.5, "\\u00e9"], "c": {"d": null}}',
        '{"a": 1}',
        "\ufeff{}",  # text starting with a BOM: refused, as json.loads refuses it
        b"\xef\xbb\xbf{}",  # UTF-8 bytes with their BOM: read, as json.loads reads them
        '{"a": 1} x',
        "[1, 2",
        '"just text"',
        '{"a": 1, "a": 2}',
        b"\xff\xfe{\x00}\x00",  # UTF-16 LE
    ],
)
def test_body_loads_accepts_what_json_loads_accepts(data: bytes | str) -> None:
    """The body parser (its decoder built once) reads what json.loads reads, the same value; a
    repeated key is refused besides."""
    import json

    from core.errors import BadRequest
    from core.http.body import loads

    try:
        expected = json.loads(data)
    except ValueError:
        with pytest.raises(BadRequest):
            loads(data)
        return
    if data == '{"a": 1, "a": 2}':
        with pytest.raises(BadRequest, match="more than once"):
            loads(data)
    else:
        assert loads(data) == expected
