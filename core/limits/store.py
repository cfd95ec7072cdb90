"""Which store answers: Redis (shared by every process), or the per-process store.

Without ``REDIS_URL`` the :class:`~core.limits.memory.MemoryStore` answers everything. With it,
every call goes to the :class:`~core.limits.redis_store.RedisStore` through the Redis
dependency's circuit breaker (the Redis manager's one): the limiter's first failure opens it
(a 100 ms timeout is conclusive), and while it is open ``RATE_LIMIT_FAIL_MODE`` decides —
``open``: the per-process store answers; ``closed``: 503 with ``Retry-After``. An open circuit
lets one call through per ``BREAKER_PROBE_INTERVAL``: the next request's, or the Redis
manager's background prober's, whichever comes first; Redis is used again as soon as it
answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis as redis_lib

from core.errors import ServiceUnavailable
from core.limits.memory import MemoryStore
from core.limits.plan import Outcome, Plan
from core.limits.redis_store import RedisStore

if TYPE_CHECKING:
    from core.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

T = TypeVar("T")

OPEN = "open"  # CircuitBreaker.state while it refuses calls and no probe is in flight

# "Redis is not answering" (an error reply — WRONGTYPE, a script bug — is an answer).
REDIS_FAILURES: tuple[type[BaseException], ...] = (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError)
# ... or the circuit refuses the call (``CircuitOpen``, a ServiceUnavailable: core.limits and
# core.breaker are independent layers, so it is caught by its base class).
_DOWN: tuple[type[BaseException], ...] = (ServiceUnavailable, *REDIS_FAILURES)
_DOWN_OR_ERROR: tuple[type[BaseException], ...] = (*_DOWN, redis_lib.RedisError)


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The rate limiter is unavailable; retry shortly.", retry_after=1)


class LimitStore:
    """Runs plans and ban operations on Redis, or on the per-process store."""

    def __init__(
        self, memory: MemoryStore, redis: RedisStore | None, breaker: CircuitBreaker, *, fail_closed: bool
    ) -> None:
        self.memory = memory
        self.redis = redis
        self.breaker = breaker
        self.fail_closed = fail_closed

    @property
    def using_redis(self) -> bool:
        """True while Redis answers (not the per-process store)."""
        return self.redis is not None and not self.breaker.is_open

    def evaluate(self, plan: Plan) -> Outcome:
        """Run ``plan``; raise :class:`ServiceUnavailable` in closed mode while Redis is down."""
        redis = self.redis
        if redis is None:
            return self.memory.evaluate(plan)
        try:
            return self._on_redis(redis.evaluate, plan)
        except _DOWN:
            pass
        except redis_lib.RedisError:
            # Redis answered with an error (a wrong key type, a script bug): a bug to fix,
            # but the request is still served from the per-process store.
            logger.exception("rate limiter: Redis script error")
        if self.fail_closed:
            raise _unavailable()
        outcome = self.memory.evaluate(plan)
        outcome.fallback = True
        return outcome

    # -- ban operations: on Redis, or on the per-process store while Redis is down ----------
    def set_ban(
        self, kind: str, identifier: str, ttl_ms: int, strikes: int = 0, *, only_if_absent: bool = False
    ) -> None:
        args = (kind, identifier, ttl_ms, strikes)
        self._ban_op(RedisStore.set_ban, MemoryStore.set_ban, *args, only_if_absent=only_if_absent)

    def delete_ban(self, kind: str, identifier: str) -> bool:
        return self._ban_op(RedisStore.delete_ban, MemoryStore.delete_ban, kind, identifier)

    def ban_remaining_ms(self, kind: str, identifier: str) -> int | None:
        """Closed mode while Redis is down: 503 (a ban cannot be ruled out)."""
        return self._ban_op(RedisStore.ban_remaining_ms, MemoryStore.ban_remaining_ms, kind, identifier, strict=True)

    def _ban_op(
        self,
        on_redis: Callable[..., T],
        on_memory: Callable[..., T],
        *args: Any,
        strict: bool = False,
        **kwargs: Any,
    ) -> T:
        if self.redis is not None:
            try:
                return self._on_redis(on_redis, self.redis, *args, **kwargs)
            except _DOWN_OR_ERROR:
                if strict and self.fail_closed:
                    raise _unavailable() from None
        return on_memory(self.memory, *args, **kwargs)

    def _on_redis(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` through the breaker; a failure opens the circuit at once.

        An answer is not reported while the circuit is open with no probe in flight: it came
        before another call's failure opened it (a thread preempted between its reply and the
        report), and closing the circuit then would flap it; the probe decides."""
        breaker = self.breaker
        breaker.check()
        try:
            result = fn(*args, **kwargs)
        except REDIS_FAILURES as exc:
            breaker.failure(exc, conclusive=True)
            raise
        except BaseException:
            if breaker.state != OPEN:
                breaker.success()  # Redis answered (with an error of another kind): it is up
            raise
        if breaker.state != OPEN:
            breaker.success()
        return result

    def health(self) -> dict[str, Any]:
        """The store answering now (reads the breaker; probes nothing)."""
        if self.redis is None:
            return {"status": "healthy", "store": "in-process"}
        if not self.breaker.is_open:
            return {"status": "healthy", "store": "redis"}
        report: dict[str, Any] = {"store": "redis", "circuit": self.breaker.health()}
        if self.fail_closed:
            report.update(status="unhealthy", error="Redis unreachable (RATE_LIMIT_FAIL_MODE=closed)")
        else:
            report.update(status="degraded", fallback="in-process")
        return report

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
