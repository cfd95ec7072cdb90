"""What one request asks of the limiter store, and what the store answers.

A :class:`Plan` lists everything a request needs checked in ONE store call (one Redis round
trip): the identities whose bans are checked (and who a violation is blamed on), every limit
with its tiers, and the token deny-list keys to read. Both stores (Redis Lua script, in-process)
evaluate a plan with the same algorithm and answer an :class:`Outcome`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from core.limits.parse import Tier

ADMITTED, BANNED, REJECTED, NEWLY_BANNED = 0, 1, 2, 3


@dataclass(frozen=True)
class BanPolicy:
    after: int  # BAN_AFTER_VIOLATIONS
    window_ms: int  # BAN_WINDOW
    base_ms: int  # BAN_DURATION
    max_ms: int  # cap of the doubling (24 h, or BAN_DURATION if larger)
    strike_memory_ms: int = 86_400_000  # a ban within this time after the last one ends is a repeat


class LimitCheck(NamedTuple):
    """One limit of a plan (a NamedTuple: built for every request, read-only)."""

    level: str  # ip | user | api_key | action | login | custom
    key: str  # store key below the "rl:" prefix
    tiers: tuple[Tier, ...]
    blame: int = -1  # index into Plan.identities charged with a violation, -1 = nobody


@dataclass
class Plan:
    identities: list[tuple[str, str]]  # (kind, identifier): ban-checked, in order
    limits: list[LimitCheck]
    revocation_keys: list[str] = field(default_factory=list)
    force_violation: int = -1  # charge identities[i] with a violation (a failed login)


class TierState(NamedTuple):
    """One tier after the request: what the rate-limit headers report (a NamedTuple: built for
    every limit of every request, read-only)."""

    check: LimitCheck
    tier: Tier
    remaining: int
    reset_ms: int  # until the oldest counted request leaves the window; -1 = not looked up

    def tighter_than(self, other: TierState) -> bool:
        """The headers report the tightest tier: fewest remaining, then the longest window
        (the same rule the Lua script uses to decide whose reset it looks up)."""
        return self.remaining < other.remaining or (
            self.remaining == other.remaining and self.tier.window_ms > other.tier.window_ms
        )


def tightest(states: list[TierState]) -> TierState:
    best = states[0]
    for state in states:
        if state.tighter_than(best):
            best = state
    return best


@dataclass
class Outcome:
    status: int  # ADMITTED | BANNED | REJECTED | NEWLY_BANNED
    now_ms: int
    states: list[TierState] = field(default_factory=list)
    identity: int = -1  # BANNED/NEWLY_BANNED: the banned identity; REJECTED: the one blamed
    rejected_limit: int = -1  # REJECTED/NEWLY_BANNED: the first limit that refused, -1 = none
    retry_ms: int = 0  # BANNED/REJECTED: when to come back; NEWLY_BANNED: the ban duration
    strikes: int = 0  # NEWLY_BANNED: how many bans this identity had in a row
    revocation_values: list[bytes | None] | None = None  # None = not read (in-process store)
    fallback: bool = False  # answered by the per-process store because Redis is down

    @property
    def admitted(self) -> bool:
        return self.status == ADMITTED


def to_seconds(ms: int) -> int:
    """Whole seconds for ``Retry-After`` and the rate-limit headers: rounded up, at least 1."""
    return max(1, math.ceil(ms / 1000))
