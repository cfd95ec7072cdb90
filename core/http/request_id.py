"""X-Request-ID: echo a valid incoming one, otherwise generate one (SPEC §3)."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def current_request_id() -> str:
    rid = g.get("keel_request_id")
    if rid is None:
        incoming = request.headers.get(HEADER, "")
        rid = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        g.keel_request_id = rid
    return str(rid)


def install(app: Flask) -> None:
    @app.before_request
    def _assign_request_id() -> None:
        current_request_id()

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        response.headers[HEADER] = current_request_id()
        return response
