"""The in-process store: the same sliding-log algorithm as the Lua script, for one process.

Used when ``REDIS_URL`` is unset, and as the per-process fallback while Redis is down
(``RATE_LIMIT_FAIL_MODE=open``). ``clock`` (seconds, like :func:`time.time`) is injectable so
tests can drive window boundaries exactly.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from core.limits.plan import (
    ADMITTED,
    BANNED,
    NEWLY_BANNED,
    REJECTED,
    BanPolicy,
    Outcome,
    Plan,
    TierState,
)

# Drop empty logs and expired bans once this many keys are held (bounded memory).
_SWEEP_AT = 10_000


class MemoryStore:
    def __init__(self, policy: BanPolicy, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self._logs: dict[str, list[int]] = {}
        self._bans: dict[tuple[str, str], int] = {}  # -> until ms
        self._viol: dict[tuple[str, str], list[int]] = {}
        self._strikes: dict[tuple[str, str], tuple[int, int]] = {}  # -> (count, expires ms)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def evaluate(self, plan: Plan) -> Outcome:
        with self._lock:
            return self._evaluate(plan, self.now_ms())

    def _evaluate(self, plan: Plan, now: int) -> Outcome:
        for i, ident in enumerate(plan.identities):
            until = self._bans.get(ident)
            if until is not None:
                if until > now:
                    return Outcome(BANNED, now, identity=i, retry_ms=until - now)
                del self._bans[ident]
        if len(self._logs) > _SWEEP_AT:
            self._sweep(now)
        states: list[TierState] = []
        rejected, blame, retry = -1, -1, 0
        logs: list[list[int]] = []
        for li, check in enumerate(plan.limits):
            log = self._logs.setdefault(check.key, [])
            tiers = check.tiers
            maxw = tiers[0].window_ms if len(tiers) == 1 else max([t.window_ms for t in tiers])
            del log[: bisect.bisect_right(log, now - maxw)]  # entries <= now - maxw are out
            logs.append(log)
            for tier in tiers:
                first = bisect.bisect_right(log, now - tier.window_ms)  # first entry in the window
                count = len(log) - first
                full = count >= tier.limit
                skip = count - tier.limit if full else 0
                reset = tier.window_ms
                if first + skip < len(log):
                    reset = log[first + skip] + tier.window_ms - now
                if full:
                    if rejected < 0:
                        rejected, blame = li, check.blame
                    retry = max(retry, reset)
                states.append(TierState(check, tier, 0 if full else tier.limit - count - 1, reset))
        who = plan.force_violation if plan.force_violation >= 0 else blame
        if (rejected >= 0 or plan.force_violation >= 0) and who >= 0:
            ident = plan.identities[who]
            viol = self._viol.setdefault(ident, [])
            bisect.insort(viol, now)
            del viol[: bisect.bisect_right(viol, now - self.policy.window_ms)]
            if len(viol) >= self.policy.after:
                count, expires = self._strikes.get(ident, (0, 0))
                strikes = (count if expires > now else 0) + 1
                duration = self.ban_duration_ms(strikes)
                self._bans[ident] = now + duration
                self._strikes[ident] = (strikes, now + duration + self.policy.strike_memory_ms)
                del self._viol[ident]
                return Outcome(
                    NEWLY_BANNED, now, states, identity=who, retry_ms=duration, strikes=strikes, rejected_limit=rejected
                )
        if rejected >= 0:
            return Outcome(REJECTED, now, states, identity=blame, retry_ms=retry, rejected_limit=rejected)
        for log in logs:
            bisect.insort(log, now)
        return Outcome(ADMITTED, now, states)

    def ban_duration_ms(self, strikes: int) -> int:
        p = self.policy
        return int(min(p.max_ms, p.base_ms * 2 ** min(strikes - 1, 32)))

    def _sweep(self, now: int) -> None:
        longest = 86_400_000 * 7
        for key in [k for k, v in self._logs.items() if not v or v[-1] <= now - longest]:
            del self._logs[key]
        for ident in [k for k, v in self._bans.items() if v <= now]:
            del self._bans[ident]
        for ident in [k for k, v in self._viol.items() if not v or v[-1] <= now - self.policy.window_ms]:
            del self._viol[ident]
        for ident in [k for k, v in self._strikes.items() if v[1] <= now]:
            del self._strikes[ident]

    # -- bans -------------------------------------------------------------------------------
    def set_ban(
        self, kind: str, identifier: str, ttl_ms: int, strikes: int = 0, *, only_if_absent: bool = False
    ) -> None:
        with self._lock:
            now = self.now_ms()
            until_ms = now + ttl_ms
            ident = (kind, identifier)
            if ttl_ms <= 0 or (only_if_absent and self._bans.get(ident, 0) > now):
                return
            self._bans[ident] = until_ms
            if strikes and not (only_if_absent and ident in self._strikes):
                self._strikes[ident] = (strikes, until_ms + self.policy.strike_memory_ms)

    def delete_ban(self, kind: str, identifier: str) -> bool:
        with self._lock:
            self._viol.pop((kind, identifier), None)
            until = self._bans.pop((kind, identifier), None)
            return until is not None and until > self.now_ms()

    def ban_remaining_ms(self, kind: str, identifier: str) -> int | None:
        with self._lock:
            until = self._bans.get((kind, identifier))
            now = self.now_ms()
            return until - now if until is not None and until > now else None

    def replace_bans(self, bans: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Make the bans exactly ``{(kind, identifier): (ttl_ms, strikes)}`` (the database's
        record): bans set elsewhere appear, bans lifted elsewhere disappear."""
        with self._lock:
            now = self.now_ms()
            self._bans = {ident: now + ttl for ident, (ttl, _strikes) in bans.items() if ttl > 0}
            for ident, (ttl, strikes) in bans.items():
                if strikes and ttl > 0:
                    count, _expires = self._strikes.get(ident, (0, 0))
                    self._strikes[ident] = (max(count, strikes), now + ttl + self.policy.strike_memory_ms)

    def ping(self) -> None:
        """Always answers (same interface as the Redis store)."""
