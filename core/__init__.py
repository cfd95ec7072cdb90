"""Keel: a manager-orchestrated application framework on Flask."""

from __future__ import annotations

from core import errors
from core.app import create_app
from core.app_manager import AppManager, app_manager
from core.errors import (
    Conflict,
    Forbidden,
    IllegalTransition,
    KeelError,
    NotFound,
    ServiceUnavailable,
    ValidationError,
    VersionConflict,
)
from core.module import ActionContext, BaseModule, action
from core.version import __version__

__all__ = [
    "ActionContext",
    "AppManager",
    "BaseModule",
    "Conflict",
    "Forbidden",
    "IllegalTransition",
    "KeelError",
    "NotFound",
    "ServiceUnavailable",
    "ValidationError",
    "VersionConflict",
    "__version__",
    "action",
    "app_manager",
    "create_app",
    "errors",
]
