"""Property-based contract test of every documented operation through the real server (SPEC §3, §4.5).

Schemathesis reads ``/openapi.json`` from the running gunicorn and, per operation, sends a
bounded number of generated requests — valid ones and invalid ones — authenticated as the
admin and anonymously. Every response must: not be a 5xx, conform to the documented statuses,
content types, headers and response schemas (schemathesis' checks), carry ``X-Request-ID``,
and on 4xx be the SPEC §3 error JSON.

Schemathesis' pytest plugin (``schemathesis.pytest.from_fixture``) does not run under pytest 9
(it sets ``Function._nodeid``), so the operations are driven here through its Python API:
``operation.as_strategy(mode)`` with Hypothesis, and ``case.call`` / ``case.validate_response``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (  # the registry resolves the built-in checks by name
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_MODE = 25
# Operations that end the admin's own session or lock it out (generated ids and names may hit
# the admin): sent anonymously only (where they must answer 401), never with the admin token.
SESSION_ENDING = re.compile(r"^/auth/logout|^/actions/(ban|revoke_user_tokens)$")


def assert_keel_response(status: int, headers: dict[str, str], body: bytes) -> None:
    """The SPEC §3 guarantees every response of the real server keeps (``headers``: lowercase keys)."""
    rid = headers.get("x-request-id", "")
    assert REQUEST_ID.match(rid), f"bad or missing X-Request-ID {rid!r}"
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), headers
        data = json.loads(body)
        assert set(data) == {"success", "error", "request_id"}, data
        assert data["success"] is False, data
        assert isinstance(data["error"]["code"], str) and data["error"]["code"], data
        assert isinstance(data["error"]["message"], str) and data["error"]["message"], data
        assert data["request_id"] == rid, data


def exercise(
    operation: Any,
    mode: GenerationMode,
    http: requests.Session,
    token: str | None,
    seen: Counter[tuple[str, int]],
) -> None:
    """Send up to EXAMPLES_PER_MODE generated requests to one operation and check each answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    needs_auth = bool(operation.definition.raw.get("security"))

    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failing case
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    @seed(1 if token else 2)  # reproducible, and not the same users registered in both runs
    def run(case: Any) -> None:
        response = case.call(session=http, headers=headers, timeout=15)
        seen[operation.label, response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)
        # schemathesis' Response: lowercase header names, a list of values each
        headers_seen = {k: v[0] for k, v in response.headers.items()}
        assert_keel_response(response.status_code, headers_seen, response.content)
        if needs_auth and not token:
            # documented as needing credentials and none were sent
            assert not 200 <= response.status_code < 300, response.content

    run()


def run_operations(server: Server, token: str | None) -> tuple[Counter[tuple[str, int]], list[str]]:
    """Every operation, both generation modes; ((operation, status) counts, failure reports)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=10)
    failures: list[str] = []
    seen: Counter[tuple[str, int]] = Counter()
    with requests.Session() as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            if token and SESSION_ENDING.search(operation.path):
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    exercise(operation, mode, http, token, seen)
                except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
                    continue
                except (AssertionError, BaseExceptionGroup) as exc:  # collect all; reported by the caller
                    failures.append(f"{operation.label} [{mode.value}]: {type(exc).__name__}: {exc}"[:3000])
    return seen, failures


def successes(seen: Counter[tuple[str, int]]) -> set[str]:
    return {label for (label, status) in seen if 200 <= status < 300}


def test_generated_requests_as_admin(server: Server) -> None:
    seen, failures = run_operations(server, server.tokens["admin"])
    assert not failures, f"{len(failures)} contract violations:\n\n" + "\n\n".join(failures)
    # the generated data reached the handlers, not only the validation
    assert {"POST /actions/create_task", "GET /actions/list_tasks", "POST /auth/register", "POST /auth/api-keys"} <= (
        successes(seen)
    ), sorted(seen)
    assert sum(seen.values()) > 500


def test_generated_requests_anonymous(server: Server) -> None:
    seen, failures = run_operations(server, None)
    assert not failures, f"{len(failures)} contract violations:\n\n" + "\n\n".join(failures)
    assert {"GET /actions/system_info", "GET /health", "POST /auth/register"} <= successes(seen), sorted(seen)
    assert sum(seen.values()) > 500
