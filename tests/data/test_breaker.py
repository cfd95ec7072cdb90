"""The per-dependency circuit breaker (SPEC §10)."""

from __future__ import annotations

from typing import Any

import pytest

from core.breaker import CircuitBreaker, CircuitOpen, Prober


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


def _wait(predicate: Any, timeout: float = 3.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_prober_closes_an_open_circuit_without_requests() -> None:
    breaker = CircuitBreaker("dep", failures=(Down,), threshold=1, probe_interval=0.05)
    attempts: list[int] = []

    def probe() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            breaker.call(_fail)  # still down twice
        breaker.call(lambda: None)

    prober = Prober("dep")
    prober.add(breaker, probe)
    prober.start()
    try:
        assert not attempts  # asleep while the circuit is closed
        breaker.failure(Down())
        assert _wait(lambda: breaker.state == "closed")
        assert len(attempts) == 3  # one probe per interval until one succeeded
    finally:
        prober.stop()
    prober.stop()  # idempotent


def test_prober_survives_a_raising_probe(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker("dep", failures=(Down,), threshold=1, probe_interval=0.05)
    calls: list[int] = []

    def probe() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        breaker.call(lambda: None)

    prober = Prober("dep")
    prober.add(breaker, probe)
    prober.start()
    try:
        breaker.failure(Down())
        assert _wait(lambda: breaker.state == "closed")
    finally:
        prober.stop()
    assert "background probe raised" in caplog.text


def test_probe_delay() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    assert breaker.probe_delay() is None
    for _ in range(3):
        breaker.failure(Down())
    clock.now += 0.25
    assert breaker.probe_delay() == pytest.approx(0.75)
    clock.now += 1
    assert breaker.probe_delay() == 0
    assert breaker.allow()
    assert breaker.probe_delay() == 1.0  # a probe is in flight
