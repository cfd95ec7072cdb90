"""The per-dependency circuit breaker (SPEC §10)."""

from __future__ import annotations

from typing import Any

import pytest

from core.breaker import CircuitBreaker, CircuitOpen


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Down(Exception):
    pass


def _breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("dep", failures=(Down,), threshold=3, probe_interval=1.0, clock=clock)


def _fail() -> Any:
    raise Down("no route")


def test_opens_after_consecutive_failures_then_fails_fast() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    calls = []

    def flaky() -> Any:
        calls.append(1)
        raise Down

    for _ in range(3):
        with pytest.raises(Down):
            breaker.call(flaky)
    assert breaker.state == "open" and breaker.is_open
    with pytest.raises(CircuitOpen) as info:
        breaker.call(flaky)
    assert len(calls) == 3  # the fourth call never reached the dependency
    assert info.value.status == 503 and info.value.retry_after == 1
    assert info.value.dependency == "dep"
    report = breaker.health()
    assert report["state"] == "open" and report["last_error"] == "Down"


def test_a_success_resets_the_count() -> None:
    breaker = _breaker(FakeClock())
    for _ in range(2):
        with pytest.raises(Down):
            breaker.call(_fail)
    assert breaker.call(lambda: 42) == 42
    for _ in range(2):
        with pytest.raises(Down):
            breaker.call(_fail)
    assert breaker.state == "closed"


def test_one_probe_per_interval_closes_it() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failure(Down())
    clock.now += 0.5
    assert not breaker.allow()
    assert not breaker.probe_due
    clock.now += 0.6
    assert breaker.probe_due
    assert breaker.allow()  # the probe
    assert not breaker.probe_due
    assert breaker.state == "half_open"
    assert not breaker.allow()  # only one probe in flight
    breaker.failure(Down())  # probe failed: open for another interval
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.0
    assert breaker.call(lambda: "up") == "up"
    assert breaker.state == "closed" and breaker.allow()


def test_other_errors_prove_the_dependency_answers() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failure(Down())
    clock.now += 1.0
    with pytest.raises(KeyError):
        with breaker:  # a probe that gets an application error: the dependency is up
            raise KeyError("no such row")
    assert breaker.state == "closed"


def test_listeners_see_state_changes() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    seen: list[tuple[str, str]] = []
    breaker.on_change(lambda old, new: seen.append((old, new)))
    for _ in range(3):
        breaker.failure(Down())
    clock.now += 1.0
    breaker.allow()
    breaker.success()
    assert seen == [("closed", "open"), ("half_open", "closed")]


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker("x", threshold=0)
