"""One exception root and the HTTP mapping.

Every error Keel raises derives from :class:`KeelError`. Configuration, definition and module
errors stop the start; :class:`HTTPError` subclasses are turned into the JSON error shape of
SPEC §3 by the single error boundary in :mod:`core.http.errors` (and into Socket.IO errors by
the WebSocket manager's ``on_error_default``).
"""

from __future__ import annotations

from typing import Any


class KeelError(Exception):
    """Root of every Keel exception."""


class ConfigError(KeelError):
    """A setting is missing or invalid; the start is stopped."""


class ActionDefinitionError(KeelError):
    """An action file or definition is invalid. ``errors`` holds one line per problem."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


class ModuleError(KeelError):
    """A module cannot be loaded, ordered or started."""


class SetupError(KeelError):
    """Registration attempted after the application started serving."""


class HTTPError(KeelError):
    """An error that becomes an HTTP response with the SPEC §3 error shape."""

    status: int = 500
    code: str = "internal_error"
    message: str = "Internal server error."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        if code is not None:
            self.code = code
        self.details = details
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class BadRequest(HTTPError):
    status, code, message = 400, "bad_request", "The request could not be understood."


class ValidationError(HTTPError):
    """Parameters are invalid; ``details`` is a list of ``{"param", "message"}``."""

    status, code, message = 400, "validation_error", "Invalid parameters."


class Unauthorized(HTTPError):
    status, code, message = 401, "unauthorized", "Authentication required or credentials invalid."


class InvalidCredentials(HTTPError):
    status, code, message = 401, "invalid_credentials", "Invalid username or password."


class Forbidden(HTTPError):
    status, code, message = 403, "forbidden", "You are not allowed to do this."


class Banned(HTTPError):
    status, code, message = 403, "banned", "This client is temporarily banned."


class NotFound(HTTPError):
    status, code, message = 404, "not_found", "Not found."


class MethodNotAllowed(HTTPError):
    status, code, message = 405, "method_not_allowed", "Method not allowed."


class Conflict(HTTPError):
    status, code, message = 409, "conflict", "Conflict."


class IllegalTransition(Conflict):
    """A state transition along an edge that is not in the machine's graph."""

    message = "Illegal state transition."


class VersionConflict(Conflict):
    """A stale ``expected_version`` or a lost compare-and-set race."""

    message = "The record was changed by someone else; reload and retry."


class PayloadTooLarge(HTTPError):
    status, code, message = 413, "payload_too_large", "Request body too large."


class UnsupportedMediaType(HTTPError):
    status, code, message = 415, "unsupported_media_type", "Request body must be JSON (application/json)."


class RateLimited(HTTPError):
    status, code, message = 429, "rate_limited", "Rate limit exceeded."


class InternalError(HTTPError):
    status, code, message = 500, "internal_error", "Internal server error."


class ServiceUnavailable(HTTPError):
    status, code, message = 503, "service_unavailable", "A required service is unavailable."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("retry_after", 5)
        super().__init__(message, **kwargs)


__all__ = [
    "ActionDefinitionError",
    "BadRequest",
    "Banned",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "HTTPError",
    "IllegalTransition",
    "InternalError",
    "InvalidCredentials",
    "KeelError",
    "MethodNotAllowed",
    "ModuleError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "SetupError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
    "VersionConflict",
]
