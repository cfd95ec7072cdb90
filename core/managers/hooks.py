"""HooksManager: named hooks with priorities (SPEC §5).

``register(name, callback, priority=10)``: lower priorities run first, equal priorities in
registration order. ``trigger(name, **data)`` calls every callback with the data and returns
their results in order; a callback that raises is logged with its traceback and the others
still run (its result is ``None``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from core.managers.base import Manager

logger = logging.getLogger(__name__)


class HooksManager(Manager):
    name: ClassVar[str] = "hooks"

    def __init__(self) -> None:
        self._hooks: dict[str, list[tuple[int, int, Callable[..., Any]]]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def register(self, name: str, callback: Callable[..., Any], priority: int = 10) -> None:
        if not callable(callback):
            raise TypeError(f"hook {name!r}: callback must be callable, got {type(callback).__name__}")
        with self._lock:
            self._seq += 1
            entries = [*self._hooks.get(name, []), (priority, self._seq, callback)]
            entries.sort(key=lambda e: (e[0], e[1]))
            # Replace the list instead of mutating it: trigger() iterates without the lock.
            self._hooks[name] = entries

    def unregister(self, name: str, callback: Callable[..., Any]) -> None:
        with self._lock:
            self._hooks[name] = [e for e in self._hooks.get(name, []) if e[2] is not callback]

    def listening(self, name: str) -> bool:
        """Whether ``name`` has a listener now (a caller may skip building an event nobody
        receives: :meth:`trigger` would call nothing)."""
        return bool(self._hooks.get(name))

    def trigger(self, name: str, /, **data: Any) -> list[Any]:
        results: list[Any] = []
        for _priority, _seq, callback in self._hooks.get(name, ()):
            try:
                results.append(callback(**data))
            except Exception:
                # A hook is an extension point: one broken listener must not break the event
                # for the others or for the code that fired it. Logged with its traceback.
                logger.exception("hook %r: callback %s raised", name, getattr(callback, "__qualname__", callback))
                results.append(None)
        return results
