"""A per-dependency circuit breaker (SPEC §10).

Every call to Redis, Vault, PostgreSQL/Oracle and MongoDB goes through the breaker of that
dependency. After ``threshold`` consecutive failures the circuit *opens*: calls fail fast with
:class:`CircuitOpen` (a 503 ``service_unavailable``) instead of waiting on a dependency known to
be down. Once ``probe_interval`` seconds (1 s by default) have passed since the last failure,
one call is let through as a probe (*half-open*); its success closes the circuit, its failure
keeps it open for another interval. Fallbacks (the limiter's in-process store, Vault's cached
values, the state cache bypass) are driven by :attr:`CircuitBreaker.is_open` / ``CircuitOpen``.

Usage::

    breaker = CircuitBreaker("redis", failures=(redis.ConnectionError, redis.TimeoutError))
    value = breaker.call(client.get, "k")          # or:
    with breaker:
        value = client.get("k")
    breaker.health()   # {"state": "closed", "failures": 0, ...} for /health

Only exceptions listed in ``failures`` count against the dependency; any other exception (a
constraint violation, a Redis ``WRONGTYPE``) proves the dependency answered and counts as a
success. Thread- and greenlet-safe; one instance per dependency per app (no globals).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from core.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpen(ServiceUnavailable):
    """A call was refused because the dependency's circuit is open (503, fail fast)."""

    def __init__(self, dependency: str, retry_after: int = 1) -> None:
        super().__init__(f"{dependency} is unavailable.", retry_after=retry_after)
        self.dependency = dependency


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a timed single probe.

    :param name: the dependency, shown in errors, logs and health (``"redis"``, ``"db"``).
    :param failures: exception types that count as the dependency failing.
    :param threshold: consecutive failures that open the circuit.
    :param probe_interval: seconds an open circuit waits before letting one probe through.
    :param clock: monotonic clock (tests inject a fake one).
    """

    def __init__(
        self,
        name: str,
        *,
        failures: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError),
        threshold: int = 3,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.name = name
        self.failures = failures
        self.threshold = threshold
        self.probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._last_failure_at = 0.0
        self._probe_in_flight = False
        self._last_error: str | None = None
        self._opened_count = 0
        self._listeners: list[Callable[[str, str], None]] = []

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (a probe is in flight)."""
        return self._state

    @property
    def is_open(self) -> bool:
        """True while calls are refused (open or probing): callers should use their fallback."""
        return self._state != CLOSED

    @property
    def probe_due(self) -> bool:
        """Open, and the next call would be let through as the probe."""
        return (
            self._state == OPEN
            and not self._probe_in_flight
            and self._clock() - self._last_failure_at >= self.probe_interval
        )

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(old_state, new_state)`` on every state change (outside the lock)."""
        self._listeners.append(listener)

    # -- the protocol ------------------------------------------------------------------------
    def allow(self) -> bool:
        """May a call go ahead now? In an open circuit, True for exactly one probe per interval.

        A caller that got True must report the outcome with :meth:`success` or :meth:`failure`.
        """
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._probe_in_flight:
                return False
            if self._clock() - self._last_failure_at < self.probe_interval:
                return False
            self._probe_in_flight = True
            self._state = HALF_OPEN
            return True

    def success(self) -> None:
        with self._lock:
            self._probe_in_flight = False
            self._consecutive = 0
            old, self._state = self._state, CLOSED
        if old != CLOSED:
            logger.warning("circuit %s closed: dependency answers again", self.name)
            self._notify(old, CLOSED)

    def failure(self, exc: BaseException | None = None, *, conclusive: bool = False) -> None:
        """Count a failure. ``conclusive``: open the circuit now, whatever the threshold (a
        caller whose one timeout is its whole budget: the limiter's 100 ms call)."""
        with self._lock:
            self._probe_in_flight = False
            self._consecutive += 1
            self._last_failure_at = self._clock()
            if exc is not None:
                self._last_error = type(exc).__name__
            old, count = self._state, self._consecutive
            if old == CLOSED and count < self.threshold and not conclusive:
                return
            self._state = OPEN
            if old == CLOSED:
                self._opened_at = self._last_failure_at
                self._opened_count += 1
        if old == CLOSED:
            logger.warning(
                "circuit %s opened after %d consecutive failures (%s); failing fast, probing every %.1fs",
                self.name,
                count,
                self._last_error,
                self.probe_interval,
            )
        if old != OPEN:
            self._notify(old, OPEN)

    def check(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go ahead (see :meth:`allow`)."""
        if not self.allow():
            raise CircuitOpen(self.name, retry_after=max(1, round(self.probe_interval)))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` through the breaker."""
        self.check()
        try:
            result = fn(*args, **kwargs)
        except self.failures as exc:
            self.failure(exc)
            raise
        except BaseException:
            # The dependency answered (with an error of another kind): it is up.
            self.success()
            raise
        self.success()
        return result

    def __enter__(self) -> CircuitBreaker:
        self.check()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, self.failures):
            self.failure(exc)
        else:
            self.success()

    def reset(self) -> None:
        """Close the circuit (tests, or an operator who knows better)."""
        self.success()

    def health(self) -> dict[str, Any]:
        """State for ``/health``: never contains secrets."""
        report: dict[str, Any] = {"state": self._state, "consecutive_failures": self._consecutive}
        if self._state != CLOSED:
            report["open_for_s"] = round(self._clock() - self._opened_at, 1)
            report["last_error"] = self._last_error
        return report

    def _notify(self, old: str, new: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                # A listener (a fallback switch, a metric) must not break the caller's request.
                logger.exception("circuit %s: state listener raised", self.name)


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "CircuitOpen"]
