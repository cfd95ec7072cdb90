"""A per-dependency circuit breaker (SPEC §10).

Every call to Redis, Vault, PostgreSQL/Oracle and MongoDB goes through the breaker of that
dependency. After ``threshold`` consecutive failures the circuit *opens*: calls fail fast with
:class:`CircuitOpen` (a 503 ``service_unavailable``) instead of waiting on a dependency known to
be down. Once ``probe_interval`` seconds (1 s by default) have passed since the last failure,
one call is let through as a probe (*half-open*); its success closes the circuit, its failure
keeps it open for another interval. Fallbacks (the limiter's in-process store, Vault's cached
values, the state cache bypass) are driven by :attr:`CircuitBreaker.is_open` / ``CircuitOpen``.
Every breaker exports its state as ``keel_breaker_open{dependency="<name>"}`` (0 closed, 1 open).

Usage::

    breaker = CircuitBreaker("redis", failures=(redis.ConnectionError, redis.TimeoutError))
    value = breaker.call(client.get, "k")          # or:
    with breaker:
        value = client.get("k")
    breaker.health()   # {"state": "closed", "failures": 0, ...} for /health

A :class:`Prober` thread probes open circuits in the background, so that a dependency that
comes back closes its circuit even when no request arrives, and ``/health`` only reads.

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
from core.metrics import BREAKER_OPEN

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
        self._listeners: list[Callable[[str, str], None]] = []
        self._open_gauge = BREAKER_OPEN.labels(name)  # keel_breaker_open{dependency=name}, set on changes
        self._open_gauge.set(0)

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (a probe is in flight)."""
        return self._state

    @property
    def is_open(self) -> bool:
        """True while calls are refused (open or probing): callers should use their fallback."""
        return self._state != CLOSED

    def probe_delay(self) -> float | None:
        """Seconds until the next probe may go (0: now); ``None`` while the circuit is closed."""
        if self._state == CLOSED:
            return None
        if self._probe_in_flight:
            return self.probe_interval
        return max(0.0, self.probe_interval - (self._clock() - self._last_failure_at))

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
        if self._state == CLOSED and self._consecutive == 0:
            return  # nothing to reset: the common case stays lock-free (every pool checkout)
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
        self, _exc_type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, self.failures):
            self.failure(exc)
        else:
            self.success()

    def health(self) -> dict[str, Any]:
        """State for ``/health``: never contains secrets."""
        report: dict[str, Any] = {"state": self._state, "consecutive_failures": self._consecutive}
        if self._state != CLOSED:
            report["open_for_s"] = round(self._clock() - self._opened_at, 1)
            report["last_error"] = self._last_error
        return report

    def _notify(self, old: str, new: str) -> None:
        self._open_gauge.set(0 if new == CLOSED else 1)
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                # A listener (a fallback switch, a metric) must not break the caller's request.
                logger.exception("circuit %s: state listener raised", self.name)


class Prober:
    """Closes open circuits from one background thread, so that no request has to be the probe
    and ``health()`` only reads the breakers (SPEC §10: "a probe every second closes it again").

    ``add(breaker, probe)`` (before :meth:`start`): while ``breaker`` is open, ``probe()`` runs
    each time a probe is due. The probe must report to the breaker itself
    (``breaker.call(client.ping)``, or a connection on an engine whose events drive it). The
    thread sleeps while every circuit is closed (a state change wakes it) and stops in
    :meth:`stop`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._checks: list[tuple[CircuitBreaker, Callable[[], object]]] = []
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def add(self, breaker: CircuitBreaker, probe: Callable[[], object]) -> None:
        self._checks.append((breaker, probe))
        breaker.on_change(self._changed)

    def start(self) -> None:
        if self._checks and self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name=f"keel-probe:{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread (idempotent); an in-flight probe is waited for up to ``timeout`` s."""
        self._stopped = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _changed(self, old: str, new: str) -> None:
        if new == OPEN:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            delays: list[float] = []
            for breaker, probe in self._checks:
                if breaker.probe_due:
                    self._probe(breaker, probe)
                delay = breaker.probe_delay()
                if delay is not None:
                    delays.append(delay)
            # Sleep until the next probe is due; with every circuit closed, until one opens.
            self._wake.wait(max(0.01, min(delays)) if delays else None)

    def _probe(self, breaker: CircuitBreaker, probe: Callable[[], object]) -> None:
        down: tuple[type[BaseException], ...] = (ServiceUnavailable, *breaker.failures)
        try:
            probe()
        except down:
            pass  # still down (the breaker counted it): the next probe comes one interval later
        except Exception:
            # The prober must outlive a surprise (a driver error of an unexpected kind): logged
            # with its traceback; requests still probe by themselves, the next tick tries again.
            logger.exception("circuit %s: background probe raised", breaker.name)


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "CircuitOpen", "Prober"]
