"""ServicesManager: a registry of named objects that modules share (SPEC §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask

from core.errors import KeelError
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager


class ServicesManager(Manager):
    name: ClassVar[str] = "services"

    def __init__(self) -> None:
        self._services: dict[str, Any] = {}

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am

    def register(self, name: str, obj: Any, *, replace: bool = False) -> None:
        """Share ``obj`` as ``name``; only while the app is built (:class:`SetupError` after)."""
        self.am.check_setup(f"services.register({name!r})")
        if name in self._services and not replace:
            raise KeelError(f"service {name!r} is already registered; pass replace=True to replace it")
        self._services[name] = obj

    def get(self, name: str, default: Any = ...) -> Any:
        try:
            return self._services[name]
        except KeyError:
            if default is not ...:
                return default
            known = ", ".join(sorted(self._services)) or "none"
            raise KeelError(f"no service named {name!r} (registered: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def names(self) -> list[str]:
        return sorted(self._services)
