"""Keel: a manager-orchestrated application framework on Flask."""

from __future__ import annotations

__version__ = "0.1.0"

from core import errors
from core.app import create_app
from core.app_manager import AppManager, app_manager
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
from core.module import ActionContext, BaseModule, action
from core.users import PASSWORD_MAX, PASSWORD_MIN, USERNAME_RE

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
    "create_app",
    "errors",
    "protect",
]
