"""BaseModule and the ``@action`` marker (SPEC §5)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from core.auth.policy import has_role
from core.errors import ModuleError

if TYPE_CHECKING:
    from flask import Blueprint

    from core.app_manager import AppManager

F = TypeVar("F", bound=Callable[..., Any])

ACTION_MARK = "__keel_action__"


def action(func: F) -> F:
    """Mark a module method as an action handler that YAML may name.

    The handler's signature must be ``(self, params, ctx)``; it is checked when the module is
    loaded, not on the first call.
    """
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 3:
        raise ModuleError(
            f"@action {func.__qualname__} must have the signature (self, params, ctx); "
            f"it has ({', '.join(p.name for p in params)})"
        )
    setattr(func, ACTION_MARK, True)
    return func


def is_action(obj: Any) -> bool:
    return callable(obj) and getattr(obj, ACTION_MARK, False) is True


@dataclass(slots=True)
class ActionContext:
    """What a handler knows about the call: who, from where, which request."""

    request_id: str
    client_ip: str
    action: str = ""  # the action's (or protected route's) name
    user: dict[str, Any] | None = None  # {"id", "username", "roles"}
    api_key: dict[str, Any] | None = None  # {"id", "name", "scopes"}
    status: int = 200  # a handler sets 201 for "created"
    claims: dict[str, Any] | None = None  # a user call's verified access-token claims (jti, fam, exp, ...)

    def has_role(self, role: str) -> bool:
        """The caller is a user holding ``role`` (``admin`` holds every role)."""
        return self.user is not None and has_role(self.user["roles"], (role,))

    @property
    def identity(self) -> str:
        if self.api_key is not None:
            return f"api_key:{self.api_key['id']}"
        if self.user is not None:
            return f"user:{self.user['id']}"
        return f"ip:{self.client_ip}"


class BaseModule:
    """Base class of plugin modules. Subclass it in ``modules/<name>/__init__.py``."""

    name: str = ""
    version: str = "0.0.0"
    dependencies: list[str] = []  # noqa: RUF012 - class-level declaration, never mutated
    required: bool = False
    url_prefix: str | None = None  # default "/<name>"

    def __init__(self) -> None:
        self.app_manager: AppManager | None = None

    def initialize(self, app_manager: AppManager) -> None:
        raise NotImplementedError(f"module {self.name!r} must implement initialize(app_manager)")

    def register_routes(self, blueprint: Blueprint) -> None:
        """Add extra Flask routes to the module's blueprint (optional)."""

    def configure(self) -> None:
        """Called once every module is initialized (optional)."""

    def dispose(self) -> None:
        """Release resources; called in reverse start order at shutdown (optional)."""

    def health_check(self) -> dict[str, Any]:
        return {"status": "healthy"}

    @classmethod
    def action_handlers(cls) -> dict[str, Callable[..., Any]]:
        """The methods marked ``@action``, by name."""
        found = {}
        for attr in dir(cls):
            if attr.startswith("__"):
                continue
            value = inspect.getattr_static(cls, attr, None)
            if is_action(value):
                found[attr] = value
        return found
