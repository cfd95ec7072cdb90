"""Rate-limit strings: ``"20/second;300/minute"`` → tiers (also ``"100/5 minutes"``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from core.errors import ConfigError

_PART = re.compile(r"^\s*(\d+)\s*/\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_UNIT_MS = {"second": 1000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


@dataclass(frozen=True)
class Tier:
    """At most ``limit`` requests in any rolling window of ``window_ms`` milliseconds."""

    limit: int
    window_ms: int

    @property
    def window_s(self) -> int:
        return max(1, self.window_ms // 1000)

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_s}s"


@lru_cache(maxsize=1024)
def parse_limit(text: str) -> tuple[Tier, ...]:
    """Parse ``"20/second;300/minute"``; raise :class:`ConfigError` naming the bad part."""
    tiers = []
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _PART.match(part)
        if match is None:
            raise ConfigError(
                f"rate limit {text!r}: {part.strip()!r} is not like '300/minute', '100/5 minutes' "
                "or '20/second;300/minute'"
            )
        count, mult, unit = match.groups()
        window = int(mult or 1) * _UNIT_MS[unit.lower()]
        if window <= 0:
            raise ConfigError(f"rate limit {text!r}: the window must be at least 1 {unit}")
        tiers.append(Tier(int(count), window))
    if not tiers:
        raise ConfigError(f"rate limit {text!r} is empty; expected e.g. '300/minute'")
    return tuple(sorted(set(tiers), key=lambda t: (t.window_ms, t.limit)))
