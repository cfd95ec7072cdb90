"""Keel: a manager-orchestrated application framework on Flask."""

from __future__ import annotations

from core import errors
from core.app import create_app
from core.app_manager import AppManager, app_manager
from core.auth.users import PASSWORD_MAX, PASSWORD_MIN, USERNAME_RE
from core.data.sql import utc_timestamp
from core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    IllegalTransition,
    InvalidCredentials,
    KeelError,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
    VersionConflict,
)
from core.http.protect import protect
from core.logs import audit
from core.module import ActionContext, BaseModule, action
from core.version import __version__

__all__ = [
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "USERNAME_RE",
    "ActionContext",
    "AppManager",
    "BadRequest",
    "BaseModule",
    "Conflict",
    "Forbidden",
    "IllegalTransition",
    "InvalidCredentials",
    "KeelError",
    "NotFound",
    "ServiceUnavailable",
    "Unauthorized",
    "ValidationError",
    "VersionConflict",
    "__version__",
    "action",
    "app_manager",
    "audit",
    "create_app",
    "errors",
    "protect",
    "utc_timestamp",
]
