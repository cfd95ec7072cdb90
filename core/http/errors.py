"""The one error boundary: every error becomes the SPEC §3 JSON shape (never HTML)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from core.errors import HTTPError, InternalError
from core.http.state import current_request_id

logger = logging.getLogger("keel.http")

# Werkzeug/Flask's own errors (routing, body size, bad JSON) mapped to Keel codes.
_WERKZEUG_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}
_WERKZEUG_MESSAGES = {
    400: "The request could not be understood.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
    415: "Request body must be JSON (application/json).",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify(
        {
            "success": False,
            "error": {"code": code, "message": message, "details": details},
            "request_id": current_request_id(),
        }
    )
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    if status == 401 and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def keel_error_response(exc: HTTPError) -> Response:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    return error_response(exc.status, exc.code, exc.message, exc.details, headers)


def install(app: Flask) -> None:
    # A declared oversize body is refused (413) by the request pipeline (core.http.pipeline).
    @app.errorhandler(HTTPError)
    def _keel(exc: HTTPError) -> Response:
        if exc.status >= 500:
            logger.warning("%s %s: %s", exc.status, exc.code, exc.message)
        return keel_error_response(exc)

    @app.errorhandler(HTTPException)
    def _werkzeug(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _WERKZEUG_CODES.get(status, "internal_error" if status >= 500 else "bad_request")
        message = _WERKZEUG_MESSAGES.get(status, exc.name)
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        return error_response(status, code, message, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The boundary: anything unexpected is logged with its traceback and request id, and
        # the client gets the generic 500 body with no detail.
        logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path, exc_info=exc)
        return keel_error_response(InternalError())
