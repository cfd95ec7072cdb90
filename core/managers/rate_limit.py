"""RateLimiterManager: sliding-window limits and bans (SPEC §7, §8's per-message limit).

- Levels: per IP (``RATE_LIMIT_IP``), per user (``RATE_LIMIT_USER``), per API key
  (``RATE_LIMIT_API_KEY``), per action and identity (YAML ``rate_limit``; identity = the user,
  or the API key's owner, else the key without an owner, else the IP), login attempts per IP and
  per username — or per device token (:mod:`core.auth.devices`) — (``RATE_LIMIT_LOGIN``), and
  any key a caller names through :meth:`RateLimiterManager.hit` (the WebSocket message limit).
- A key acts for its owner (SPEC §6): an owned key's request counts toward its owner's user
  level and their per-action buckets (shared with the owner's tokens and other keys), plus the
  key's own level; a ban of the owner refuses their keys. A key's limits can only be stricter
  than its owner's, never looser. Its violations are its own (the caller's): a runaway key
  gets itself banned, not its owner's account.
- ``BAN_EXEMPT_NETWORKS`` (:mod:`core.limits.exempt`; default: loopback in development and
  test): clients there are never rate limited, never refused for a ban of their IP and never
  blamed for a violation (so never auto-banned); a ban of the user or key they act as still
  applies.
- Algorithm: sliding log, exact (see ``core/limits/sliding_window.lua``). With ``REDIS_URL``,
  everything one request needs — its bans, every limit, the token deny-list values — is ONE
  ``EVALSHA``; without it, :class:`~core.limits.memory.MemoryStore` runs the same algorithm.
- Bans: ``BAN_AFTER_VIOLATIONS`` rejections within ``BAN_WINDOW`` ban the blamed identity for
  ``BAN_DURATION``, doubling per repeat up to 24 h. Redis (or memory) answers requests; the
  ``keel_bans`` table is the record restored at start and when Redis comes back
  (:mod:`core.limits.bans`).
- Fail modes (:mod:`core.limits.store`): Redis through the Redis manager's circuit breaker,
  with a short socket timeout (``RATE_LIMIT_REDIS_TIMEOUT``, 100 ms) and no retry; the first
  failure opens the circuit. ``open``: the per-process store answers meanwhile (one warning,
  ``/health`` degraded); ``closed``: 503 with ``Retry-After``. The Redis manager's background
  prober (and the next request) tries Redis once per ``BREAKER_PROBE_INTERVAL``; it is used as
  soon as it answers.
- The HTTP steps (ban check and IP limit of non-action routes, the rate-limit headers) live in
  :mod:`core.http.limits`; this facade knows nothing of requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask

from core import metrics
from core.auth.users import username_key
from core.breaker import CLOSED, OPEN
from core.errors import Banned, RateLimited, ValidationError
from core.limits.bans import BanRecords, Bans, bans_table
from core.limits.exempt import LOOPBACK, ExemptNetworks
from core.limits.memory import MemoryStore
from core.limits.parse import Tier, parse_limit
from core.limits.plan import (
    ADMITTED,
    BANNED,
    NEWLY_BANNED,
    REJECTED,
    BanPolicy,
    LimitCheck,
    Outcome,
    Plan,
    tightest,
    to_seconds,
)
from core.limits.redis_store import RedisStore
from core.limits.store import LimitStore
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager
    from core.auth.identity import Principal, Requirement

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HitDecision:
    """The answer of :meth:`RateLimiterManager.hit`."""

    allowed: bool
    banned: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after: int  # seconds; 0 when allowed


class RateLimiterManager(Manager):
    name: ClassVar[str] = "limiter"

    # built once by init_app
    store: LimitStore
    bans: Bans
    records: BanRecords
    policy: BanPolicy
    ip_tiers: tuple[Tier, ...]
    user_tiers: tuple[Tier, ...]
    api_key_tiers: tuple[Tier, ...]
    login_tiers: tuple[Tier, ...]
    trusted_proxies: int
    exempt: ExemptNetworks

    # -- lifecycle ---------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        s = am.settings
        self.ip_tiers = parse_limit(s["RATE_LIMIT_IP"])
        self.user_tiers = parse_limit(s["RATE_LIMIT_USER"])
        self.api_key_tiers = parse_limit(s["RATE_LIMIT_API_KEY"])
        self.login_tiers = parse_limit(s["RATE_LIMIT_LOGIN"])
        self.trusted_proxies = int(s["TRUSTED_PROXY_COUNT"])
        networks = s["BAN_EXEMPT_NETWORKS"]
        if networks is None:  # the default: loopback in development and test, nothing elsewhere
            networks = list(LOOPBACK) if s["APP_ENV"] in ("development", "test") else []
        self.exempt = ExemptNetworks(networks, source=s.source("BAN_EXEMPT_NETWORKS"))
        base_ms = int(s["BAN_DURATION"]) * 1000
        self.policy = BanPolicy(
            after=int(s["BAN_AFTER_VIOLATIONS"]),
            window_ms=int(s["BAN_WINDOW"]) * 1000,
            base_ms=base_ms,
            max_ms=max(base_ms, 86_400_000),
        )
        redis = None
        if am.redis.client is not None:
            timeout = float(s["RATE_LIMIT_REDIS_TIMEOUT"])
            redis = RedisStore(am.redis.client, s["REDIS_KEY_PREFIX"], self.policy, timeout=timeout)
        self.store = LimitStore(
            MemoryStore(self.policy), redis, am.redis.breaker, fail_closed=s["RATE_LIMIT_FAIL_MODE"] == "closed"
        )
        self.records = BanRecords(am.db, bans_table(am.db.metadata))
        self.bans = Bans(self.records, self.store, am.hooks.trigger)
        self._users = am.jwt.users
        if redis is not None:
            am.redis.breaker.on_change(self._redis_state_changed)

    def start(self) -> None:
        """Restore the database's active bans into the store (``db.start()`` created the bans
        table). The Redis manager's background prober closes the shared circuit once Redis
        answers again, so an idle process gets back on Redis too."""
        self.bans.restore()

    def _redis_state_changed(self, old: str, new: str) -> None:
        if new == OPEN and old == CLOSED:
            if self.store.fail_closed:
                logger.warning("rate limiter: Redis unreachable; answering 503 (RATE_LIMIT_FAIL_MODE=closed)")
            else:
                logger.warning(
                    "rate limiter: Redis unreachable; limits and bans fall back to this process "
                    "(RATE_LIMIT_FAIL_MODE=open) until it answers again"
                )
                self.bans.restore()  # into the per-process store, now answering
        elif new == CLOSED:
            logger.warning("rate limiter: Redis answers again; limits and bans are shared again")
            self.bans.restore()

    def health(self) -> dict[str, Any]:
        return self.store.health()

    def dispose(self) -> None:
        self.store.close()

    # -- the one store call -----------------------------------------------------------------
    @property
    def using_redis(self) -> bool:
        """True while requests are answered by Redis (not the per-process store)."""
        return self.store.using_redis

    def evaluate(self, plan: Plan) -> Outcome:
        """Run ``plan`` on Redis, or on the per-process store (no Redis, or open-mode fallback).

        Raises :class:`ServiceUnavailable` in closed mode while Redis is down. Counts a
        rejection (``keel_rate_limit_rejections_total``) and records a new ban.
        """
        store = self.store
        if store.redis is None:
            self.bans.sync_memory()
        outcome = store.evaluate(plan)
        if outcome.status >= REJECTED and outcome.rejected_limit >= 0:  # REJECTED, NEWLY_BANNED
            metrics.RATE_LIMITED.labels(plan.limits[outcome.rejected_limit].level).inc()
        if outcome.status == NEWLY_BANNED:
            kind, identifier = plan.identities[outcome.identity]
            policy = self.policy
            reason = f"{policy.after} violations within {policy.window_ms // 1000}s"
            self.bans.record(kind, identifier, outcome.retry_ms, outcome.strikes, reason=reason, actor="auto")
        return outcome

    # -- the request guard's part -----------------------------------------------------------
    def check_request(
        self,
        ip: str,
        principal: Principal | None,
        requirement: Requirement,
        *,
        identity_limits: bool = True,
        revocation_keys: list[str] | None = None,
        ip_limited: bool = False,
    ) -> Outcome:
        """Bans (IP, principal, an API key's owner), the IP limit, the principal's level (an
        owned key's: its owner's user level and its own), the action's own limit (keyed by the
        user, an API key's owner, a key without one, else the IP) and the deny-list keys, in
        one store call. ``identity_limits=False`` (authentication or authorization failed)
        applies only the IP level; ``ip_limited``: the IP limit was already counted for this
        request (by the route step of :mod:`core.http.limits`). A client in
        ``BAN_EXEMPT_NETWORKS``: only the principal's bans and the deny-list keys."""
        if self.exempt.networks and ip in self.exempt:
            return self._check_exempt(principal, revocation_keys)
        identities = [("ip", ip)]
        limits: list[LimitCheck] = []
        ip_key = "ip:" + ip
        if not ip_limited:
            limits.append(LimitCheck("ip", ip_key, self.ip_tiers, 0))
        blame, ident_key = 0, ip_key
        if principal is not None:
            kind = principal.kind
            identities.append((kind, str(principal.id)))
            blame, ident_key = 1, f"{kind}:{principal.id}"
            owner = principal.owner_id
            if owner is not None:
                # An owned API key: the key's own level, then its owner's user level and action
                # buckets; a violation is the key's (the caller's), a ban of the owner refuses it.
                identities.append(("user", str(owner)))
                if identity_limits:
                    limits.append(LimitCheck(kind, ident_key, self.api_key_tiers, 1))
                    limits.append(LimitCheck("user", f"user:{owner}", self.user_tiers, 1))
                ident_key = f"user:{owner}"
            elif identity_limits:
                tiers = self.api_key_tiers if kind == "api_key" else self.user_tiers
                limits.append(LimitCheck(kind, ident_key, tiers, 1))
        if identity_limits and requirement.rate_limit:
            tiers = parse_limit(requirement.rate_limit)
            limits.append(LimitCheck("action", f"action:{requirement.name}:{ident_key}", tiers, blame))
        if not limits and principal is None and not revocation_keys:
            # A non-action route whose route step already checked this IP's ban and limit.
            return Outcome(ADMITTED, 0)
        return self.evaluate(Plan(identities, limits, list(revocation_keys or ())))

    def _check_exempt(self, principal: Principal | None, revocation_keys: list[str] | None) -> Outcome:
        """An exempt client: no limit and no IP ban; the principal's (and an API key owner's)
        bans and the deny-list keys are still read, in one store call."""
        if principal is None:
            return Outcome(ADMITTED, 0)
        identities = [(principal.kind, str(principal.id))]
        if principal.owner_id is not None:
            identities.append(("user", str(principal.owner_id)))
        return self.evaluate(Plan(identities, [], list(revocation_keys or ())))

    def check_ip(self, ip: str) -> Outcome:
        """The IP's bans and its limit (the route step of every non-action endpoint); nothing
        for an exempt client."""
        if self.exempt.networks and ip in self.exempt:
            return Outcome(ADMITTED, 0)
        return self.evaluate(Plan([("ip", ip)], [LimitCheck("ip", "ip:" + ip, self.ip_tiers, 0)]))

    @staticmethod
    def banned_error(outcome: Outcome) -> Banned | None:
        if outcome.status in (BANNED, NEWLY_BANNED):
            return Banned(retry_after=to_seconds(outcome.retry_ms))
        return None

    @staticmethod
    def limited_error(outcome: Outcome) -> RateLimited | None:
        if outcome.status == REJECTED:
            return RateLimited(retry_after=to_seconds(outcome.retry_ms))
        return None

    # -- login (called by the auth module) ---------------------------------------------------
    def login_attempt(self, username: str, ip: str, *, device: str | None = None) -> None:
        """Count a login attempt per IP and per username — or, for an attempt presenting a
        valid device token of that user (``device``: its id, see :mod:`core.auth.devices`),
        per device instead: strangers who use up the username's attempts do not lock its owner
        out of their own devices. Raise :class:`RateLimited` (or :class:`Banned`) when one is
        over ``RATE_LIMIT_LOGIN``. Rejections count toward the IP's ban. Nothing is counted
        for a client in ``BAN_EXEMPT_NETWORKS``.

        The username bucket is keyed by the name's normalised form (NFKC + case folding), the
        form login matches accounts by: ``alice``, ``ALICE`` and ``ａｌｉｃｅ`` are one bucket."""
        if self.exempt.networks and ip in self.exempt:
            return
        if device is not None:
            second = LimitCheck("login", f"login:device:{device}", self.login_tiers, 0)
        else:
            name = username_key(username.strip()[:200])[:200]
            second = LimitCheck("login", f"login:user:{name}", self.login_tiers, 0)
        plan = Plan([("ip", ip)], [LimitCheck("login", f"login:ip:{ip}", self.login_tiers, 0), second])
        outcome = self.evaluate(plan)
        error = self.banned_error(outcome) or self.limited_error(outcome)
        if error is not None:
            raise error

    def login_failed(self, username: str, ip: str) -> None:
        """A failed login is a violation of the IP (never of the username: that would let
        anyone ban a user by guessing passwords); none for an exempt client."""
        if self.exempt.networks and ip in self.exempt:
            return
        self.evaluate(Plan([("ip", ip)], [], force_violation=0))

    # -- generic limit (WebSocket messages, module code) -----------------------------------
    def hit(
        self,
        key_parts: tuple[str, ...] | list[str],
        limit: str,
        *,
        identity: tuple[str, str] | None = None,
        level: str = "custom",
    ) -> HitDecision:
        """Count one event on ``key_parts`` against ``limit`` ("20/second;300/minute").

        ``identity`` (``("user", "42")``): its ban is checked and a rejection counts toward it.
        Does not raise: the caller turns the decision into its own error.
        """
        tiers = parse_limit(limit)
        check = LimitCheck(level, "custom:" + ":".join(str(p) for p in key_parts), tiers, 0 if identity else -1)
        outcome = self.evaluate(Plan([identity] if identity else [], [check]))
        if outcome.states:
            tight = tightest(outcome.states)
            lim, remaining, reset = tight.tier.limit, tight.remaining, to_seconds(tight.reset_ms)
        else:
            lim, remaining, reset = tiers[0].limit, 0, to_seconds(outcome.retry_ms)
        return HitDecision(
            allowed=outcome.admitted,
            banned=outcome.status in (BANNED, NEWLY_BANNED),
            limit=lim,
            remaining=max(0, remaining),
            reset_s=reset,
            retry_after=0 if outcome.admitted else to_seconds(outcome.retry_ms),
        )

    # -- bans (core.limits.bans) -------------------------------------------------------------
    def ban(self, kind: str, identifier: str, seconds: int, actor: str = "admin") -> dict[str, Any]:
        """Ban ``kind:identifier`` for ``seconds`` (admin action, CLI). An address in
        ``BAN_EXEMPT_NETWORKS`` is refused (400): its ban would never apply."""
        if kind == "ip" and self.exempt and str(identifier).strip() in self.exempt:
            message = f"{identifier} is in BAN_EXEMPT_NETWORKS ({self.exempt}): a ban would never apply"
            raise ValidationError(details=[{"param": "identifier", "message": message}])
        return self.bans.ban(kind, self._user_id(identifier) if kind == "user" else identifier, seconds, actor)

    def lift_ban(self, kind: str, identifier: str, actor: str = "admin") -> dict[str, Any]:
        """Lift a ban now (every worker sees it on its next request: the ban lives in Redis)."""
        return self.bans.lift(kind, self._user_id(identifier) if kind == "user" else identifier, actor)

    def _user_id(self, identifier: Any) -> str:
        """A user is banned by id (what requests carry); a username is turned into its id, so a
        ban by name applies instead of matching nobody."""
        text = str(identifier).strip()
        if text.isascii() and text.isdigit():
            return str(int(text))
        user = self._users.by_username(text)
        if user is None:
            message = f"no user {text[:64]!r}: give a user id or an existing username"
            raise ValidationError(details=[{"param": "identifier", "message": message}])
        return str(user.id)

    def list_bans(self) -> list[dict[str, Any]]:
        """Active bans (the database record), soonest to end first."""
        return self.bans.active()

    def ban_remaining(self, kind: str, identifier: str) -> int | None:
        """Seconds left on a ban of ``kind:identifier``, ``None`` when not banned (Socket.IO
        connect refuses banned identities with this)."""
        return self.bans.remaining(kind, identifier)
