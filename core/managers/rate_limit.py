"""RateLimiterManager: sliding-window limits and bans (SPEC §7, §8's per-message limit).

- Levels: per IP (``RATE_LIMIT_IP``), per user (``RATE_LIMIT_USER``), per API key
  (``RATE_LIMIT_API_KEY``), per action and identity (YAML ``rate_limit``; identity = API key >
  user > IP), login attempts per username and per IP (``RATE_LIMIT_LOGIN``), and any key a
  caller names through :meth:`RateLimiterManager.hit` (the WebSocket message limit).
- Algorithm: sliding log, exact (see ``core/limits/sliding_window.lua``). With ``REDIS_URL``,
  everything one request needs — its bans, every limit, the token deny-list values — is ONE
  ``EVALSHA``; without it, :class:`~core.limits.memory.MemoryStore` runs the same algorithm.
- Bans: ``BAN_AFTER_VIOLATIONS`` rejections within ``BAN_WINDOW`` ban the blamed identity for
  ``BAN_DURATION``, doubling per repeat up to 24 h. Redis (or memory) answers requests; the
  ``keel_bans`` table is the record restored at start and when Redis comes back.
- Fail modes: the limiter's own Redis client has a short socket timeout
  (``RATE_LIMIT_REDIS_TIMEOUT``, 100 ms) and no retries, behind a circuit breaker that opens on
  the first failure and lets one probe through per second. ``open``: the per-process store
  answers meanwhile (one warning, ``/health`` degraded); ``closed``: 503 with ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import redis as redis_lib
import sqlalchemy as sa
from flask import Flask, Request, Response, g
from flask.ctx import _AppCtxGlobals
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import metrics
from core.breaker import CLOSED, OPEN, CircuitBreaker, CircuitOpen
from core.errors import Banned, NotFound, RateLimited, ServiceUnavailable, ValidationError
from core.http.client import request_ip
from core.http.health import EXEMPT_ENDPOINTS
from core.http.pipeline import pipeline
from core.http.state import get_state
from core.limits.bans import KINDS, BanRecords, bans_table
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
    TierState,
    tightest,
)
from core.limits.redis_store import RedisStore
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager
    from core.auth.identity import Principal, Requirement

logger = logging.getLogger(__name__)
audit = logging.getLogger("keel.audit")

MAX_BAN_SECONDS = 365 * 86_400
MEMORY_SYNC_S = 2.0  # without Redis: how often a process re-reads the bans table
_REDIS_FAILURES = (redis_lib.ConnectionError, redis_lib.TimeoutError)


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

    def __init__(self) -> None:
        self.memory: MemoryStore | None = None
        self.redis: RedisStore | None = None
        self.records: BanRecords | None = None
        self.breaker = CircuitBreaker("redis-limiter", failures=_REDIS_FAILURES, threshold=1)
        self.fail_mode = "open"
        self.ip_tiers: tuple[Tier, ...] = ()
        self.user_tiers: tuple[Tier, ...] = ()
        self.api_key_tiers: tuple[Tier, ...] = ()
        self.login_tiers: tuple[Tier, ...] = ()
        self.policy = BanPolicy(5, 300_000, 3_600_000, 86_400_000)
        self._hooks: Any = None
        self._counter_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        # RateLimit-Policy by the identity of the applied tiers (see _add_headers)
        self._policy_headers: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}
        self._next_sync = 0.0
        self.trusted_proxies = 0
        self.rejections: Counter[str] = Counter()  # by level: ip, user, api_key, action, login, ...
        self.banned_requests: Counter[str] = Counter()  # refused because banned, by ban kind
        self.bans_issued: Counter[str] = Counter()  # new bans, by kind

    # -- setup -------------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        s = am.settings
        self.fail_mode = s["RATE_LIMIT_FAIL_MODE"]
        self.ip_tiers = parse_limit(s["RATE_LIMIT_IP"])
        self.user_tiers = parse_limit(s["RATE_LIMIT_USER"])
        self.api_key_tiers = parse_limit(s["RATE_LIMIT_API_KEY"])
        self.login_tiers = parse_limit(s["RATE_LIMIT_LOGIN"])
        base_ms = int(s["BAN_DURATION"]) * 1000
        self.policy = BanPolicy(
            after=int(s["BAN_AFTER_VIOLATIONS"]),
            window_ms=int(s["BAN_WINDOW"]) * 1000,
            base_ms=base_ms,
            max_ms=max(base_ms, 86_400_000),
        )
        self.memory = MemoryStore(self.policy)
        self._hooks = am.hooks
        self.breaker = CircuitBreaker(
            "redis-limiter",
            failures=_REDIS_FAILURES,
            threshold=1,
            probe_interval=float(s["BREAKER_PROBE_INTERVAL"]),
        )
        self.breaker.on_change(self._redis_state_changed)
        if s["REDIS_URL"]:
            timeout = float(s["RATE_LIMIT_REDIS_TIMEOUT"])
            client = redis_lib.Redis.from_url(
                s["REDIS_URL"],
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),  # a retry would double the worst-case delay
                health_check_interval=0,
            )
            self.redis = RedisStore(client, s["REDIS_KEY_PREFIX"], self.policy)
        assert am.db.sql is not None
        self.records = BanRecords(am.db.sql, bans_table(am.db.metadata))
        self.trusted_proxies = int(s["TRUSTED_PROXY_COUNT"])
        steps = pipeline(app)  # one before/after hook pair for the whole framework
        steps.add_before(self._protect_route)
        steps.add_after(self._add_headers)

    def start(self) -> None:
        """Restore the database's active bans into the store (after ``db.start()`` created
        the bans table)."""
        self._restore_bans(self.redis if self.redis is not None else self.memory)

    def _restore_bans(self, store: RedisStore | MemoryStore | None) -> None:
        """Copy the active bans of the database into ``store`` (an existing entry wins)."""
        if store is None or self.records is None:
            return
        try:
            rows = self.records.active()
        except ServiceUnavailable as exc:
            logger.error("rate limiter: database unavailable (%s); bans not restored from it", exc)
            return
        except sa.exc.SQLAlchemyError:
            # The bans keep working from the store; only the restore of old ones is missed.
            logger.exception("rate limiter: cannot read the bans table; bans not restored")
            return
        now = int(time.time() * 1000)
        try:
            for row in rows:
                ttl = row["until_ms"] - now
                store.set_ban(row["kind"], row["identifier"], ttl, row["strikes"], only_if_absent=True)
        except redis_lib.RedisError as exc:
            self.breaker.failure(exc)
            self._restore_bans(self.memory)

    def _redis_state_changed(self, old: str, new: str) -> None:
        if new == OPEN and old == CLOSED:
            if self.fail_mode == "open":
                logger.warning(
                    "rate limiter: Redis unreachable; limits and bans fall back to this process "
                    "(RATE_LIMIT_FAIL_MODE=open) until it answers again"
                )
                self._restore_bans(self.memory)
            else:
                logger.warning("rate limiter: Redis unreachable; answering 503 (RATE_LIMIT_FAIL_MODE=closed)")
        elif new == CLOSED:
            logger.warning("rate limiter: Redis answers again; limits and bans are shared again")
            self._restore_bans(self.redis)

    # -- the one store call -----------------------------------------------------------------
    def evaluate(self, plan: Plan) -> Outcome:
        """Run ``plan`` on Redis, or on the per-process store (no Redis, or open-mode fallback).

        Raises :class:`ServiceUnavailable` in closed mode while Redis is down. Records a new ban
        (database, audit, hook) when the outcome is one.
        """
        assert self.memory is not None
        outcome: Outcome | None = None
        if self.redis is not None:
            try:
                outcome = self.breaker.call(self.redis.evaluate, plan)
            except CircuitOpen:
                outcome = None
            except redis_lib.RedisError as exc:
                if not isinstance(exc, _REDIS_FAILURES):
                    # Redis answered with an error (a wrong key type, a script bug): a bug to
                    # fix, but the request is still served from the per-process store.
                    logger.exception("rate limiter: Redis script error")
                outcome = None
            if outcome is None:
                if self.fail_mode == "closed":
                    raise ServiceUnavailable("The rate limiter is unavailable; retry shortly.", retry_after=1)
                outcome = self.memory.evaluate(plan)
                outcome.fallback = True
        else:
            self._sync_memory()
            outcome = self.memory.evaluate(plan)
        self._account(outcome, plan)
        return outcome

    def _sync_memory(self) -> None:
        """Without Redis, the database is what processes share: every ``MEMORY_SYNC_S`` the
        per-process bans are made equal to its record, so a ban or a lift done by another
        worker or by ``flask bans`` takes effect here within that time."""
        now = time.monotonic()
        if now < self._next_sync or not self._sync_lock.acquire(blocking=False):
            return
        try:
            self._next_sync = now + MEMORY_SYNC_S
            assert self.memory is not None and self.records is not None
            rows = self.records.active()
            wall = int(time.time() * 1000)
            self.memory.replace_bans({(r["kind"], r["identifier"]): (r["until_ms"] - wall, r["strikes"]) for r in rows})
        except ServiceUnavailable as exc:
            # Database down: the bans this process knows keep applying; the next sync retries.
            logger.warning("rate limiter: cannot read the bans table: %s", exc)
        except sa.exc.SQLAlchemyError:
            # The bans this process knows keep applying; the next sync retries.
            logger.exception("rate limiter: cannot read the bans table")
        finally:
            self._sync_lock.release()

    @property
    def using_redis(self) -> bool:
        """True while requests are answered by Redis (not the per-process store)."""
        return self.redis is not None and not self.breaker.is_open

    def _account(self, outcome: Outcome, plan: Plan) -> None:
        if outcome.status == BANNED:
            self._count(self.banned_requests, plan.identities[outcome.identity][0])
            return
        if outcome.status in (REJECTED, NEWLY_BANNED) and outcome.rejected_limit >= 0:
            level = plan.limits[outcome.rejected_limit].level
            self._count(self.rejections, level)
            metrics.RATE_LIMITED.labels(level).inc()
        if outcome.status == NEWLY_BANNED:
            kind, identifier = plan.identities[outcome.identity]
            self._record_ban(
                kind,
                identifier,
                outcome.retry_ms,
                outcome.strikes,
                reason=f"{self.policy.after} violations within {self.policy.window_ms // 1000}s",
                actor="auto",
            )

    def _count(self, counter: Counter[str], key: str) -> None:
        with self._counter_lock:
            counter[key] += 1

    # -- the request guard's part -----------------------------------------------------------
    def check_request(
        self,
        ip: str,
        principal: Principal | None,
        requirement: Requirement,
        *,
        identity_limits: bool = True,
        revocation_keys: list[str] | None = None,
    ) -> tuple[Outcome, Plan]:
        """Bans (IP, principal), the IP limit, the principal's level, the action's own limit and
        the deny-list keys, in one store call. ``identity_limits=False`` (authentication or
        authorization failed) applies only the IP level. Headers are recorded on ``g``."""
        ctx_g: _AppCtxGlobals = g._get_current_object()
        identities = [("ip", ip)]
        limits: list[LimitCheck] = []
        ip_key = "ip:" + ip
        if not get_state(ctx_g).ip_limited:
            limits.append(LimitCheck("ip", ip_key, self.ip_tiers, 0))
        blame, ident_key = 0, ip_key
        if principal is not None:
            identities.append((principal.kind, str(principal.id)))
            blame, ident_key = 1, f"{principal.kind}:{principal.id}"
            if identity_limits:
                tiers = self.api_key_tiers if principal.kind == "api_key" else self.user_tiers
                limits.append(LimitCheck(principal.kind, ident_key, tiers, blame))
        if identity_limits and requirement.rate_limit:
            tiers = parse_limit(requirement.rate_limit)
            limits.append(LimitCheck("action", f"action:{requirement.name}:{ident_key}", tiers, blame))
        plan = Plan(identities, limits, list(revocation_keys or ()))
        if not limits and principal is None and not plan.revocation_keys:
            # A non-action route whose before_request already checked this IP's ban and limit.
            return Outcome(ADMITTED, 0), plan
        outcome = self.evaluate(plan)
        self._remember(outcome, ctx_g)
        return outcome, plan

    def banned_error(self, outcome: Outcome) -> Banned | None:
        if outcome.status in (BANNED, NEWLY_BANNED):
            return Banned(retry_after=_seconds(outcome.retry_ms))
        return None

    def limited_error(self, outcome: Outcome) -> RateLimited | None:
        if outcome.status == REJECTED:
            return RateLimited(retry_after=_seconds(outcome.retry_ms))
        return None

    def _remember(self, outcome: Outcome, ctx_g: _AppCtxGlobals | None = None) -> None:
        if outcome.states:
            if ctx_g is None:
                ctx_g = g._get_current_object()
            state = get_state(ctx_g)
            earlier = state.rate_states
            state.rate_states = [*earlier, *outcome.states] if earlier else outcome.states

    def _protect_route(self, req: Request, ctx_g: _AppCtxGlobals) -> None:
        """Ban check and IP limit for every non-action endpoint (module blueprints, /auth/*,
        /actions listing, /openapi.json, /docs) except the probes. A step of the pipeline."""
        rule = req.url_rule
        if rule is None or rule.endpoint in EXEMPT_ENDPOINTS or req.path.startswith("/actions/"):
            return
        ip = request_ip(req, ctx_g, self.trusted_proxies)
        plan = Plan([("ip", ip)], [LimitCheck("ip", "ip:" + ip, self.ip_tiers, 0)])
        outcome = self.evaluate(plan)
        get_state(ctx_g).ip_limited = True
        self._remember(outcome, ctx_g)
        if outcome.status != ADMITTED:
            error = self.banned_error(outcome) or self.limited_error(outcome)
            if error is not None:
                raise error

    def _add_headers(self, req: Request, ctx_g: _AppCtxGlobals, response: Response) -> None:
        """The rate-limit headers of the tightest limit applied to this request (a step of the
        pipeline)."""
        states: list[TierState] | None = get_state(ctx_g).rate_states
        if not states:
            return
        tight = tightest(states)
        limit, remaining, reset = (
            str(tight.tier.limit),
            str(max(0, tight.remaining)),
            str(_seconds(tight.reset_ms)),
        )
        # Tiers are shared objects (parse_limit is cached), so the policy text is looked up by
        # their identity: hashing the Tier dataclasses costs more than building these headers.
        # The entry keeps the tiers alive, so an id in a key is never reused by another object.
        key = tuple([(st.check.level, id(st.check.tiers), id(st.tier)) for st in states])
        entry = self._policy_headers.get(key)
        if entry is None:
            policy = ", ".join(f'"{_policy_name(st)}";q={st.tier.limit};w={st.tier.window_s}' for st in states)
            entry = (policy, [(st.check.tiers, st.tier) for st in states])
            if len(self._policy_headers) < 1024:
                self._policy_headers[key] = entry
        policy = entry[0]
        # add(), not set(): these headers are set nowhere else, and add() skips a scan
        headers = response.headers
        headers.add("X-RateLimit-Limit", limit)
        headers.add("X-RateLimit-Remaining", remaining)
        headers.add("X-RateLimit-Reset", reset)
        headers.add("RateLimit-Policy", policy)
        headers.add("RateLimit", f'"{_policy_name(tight)}";r={remaining};t={reset}')

    # -- login (called by the auth module) ---------------------------------------------------
    def login_attempt(self, username: str, ip: str) -> None:
        """Count a login attempt per username and per IP; raise :class:`RateLimited` (or
        :class:`Banned`) when either is over ``RATE_LIMIT_LOGIN``. Rejections count toward the
        IP's ban."""
        name = username.strip().lower()[:200]
        plan = Plan(
            [("ip", ip)],
            [
                LimitCheck("login", f"login:ip:{ip}", self.login_tiers, 0),
                LimitCheck("login", f"login:user:{name}", self.login_tiers, 0),
            ],
        )
        outcome = self.evaluate(plan)
        error = self.banned_error(outcome) or self.limited_error(outcome)
        if error is not None:
            raise error

    def login_failed(self, username: str, ip: str) -> None:
        """A failed login is a violation of the IP (never of the username: that would let
        anyone ban a user by guessing passwords)."""
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
        plan = Plan([identity] if identity else [], [check])
        outcome = self.evaluate(plan)
        banned = outcome.status in (BANNED, NEWLY_BANNED)
        if outcome.states:
            tight = tightest(outcome.states)
            lim, remaining, reset = tight.tier.limit, tight.remaining, _seconds(tight.reset_ms)
        else:
            lim, remaining, reset = tiers[0].limit, 0, _seconds(outcome.retry_ms)
        return HitDecision(
            allowed=outcome.admitted,
            banned=banned,
            limit=lim,
            remaining=max(0, remaining),
            reset_s=reset,
            retry_after=0 if outcome.admitted else _seconds(outcome.retry_ms),
        )

    # -- bans --------------------------------------------------------------------------------
    def ban(self, kind: str, identifier: str, seconds: int, actor: str = "admin") -> dict[str, Any]:
        """Ban ``kind:identifier`` for ``seconds`` (admin action, CLI)."""
        _check_kind(kind)
        identifier = str(identifier).strip()
        if not identifier or len(identifier) > 255:
            raise ValidationError(details=[{"param": "identifier", "message": "1 to 255 characters"}])
        if kind == "ip":
            try:
                identifier = str(ipaddress.ip_address(identifier))
            except ValueError:
                raise ValidationError(details=[{"param": "identifier", "message": "an IPv4 or IPv6 address"}]) from None
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_BAN_SECONDS:
            raise ValidationError(details=[{"param": "seconds", "message": f"an integer from 1 to {MAX_BAN_SECONDS}"}])
        ttl_ms = seconds * 1000
        self._store_call("set_ban", kind, identifier, ttl_ms)
        return self._record_ban(kind, identifier, ttl_ms, 0, reason="manual", actor=actor)

    def lift_ban(self, kind: str, identifier: str, actor: str = "admin") -> dict[str, Any]:
        """Lift a ban now (every worker sees it on its next request: the ban lives in Redis)."""
        _check_kind(kind)
        identifier = str(identifier).strip()
        assert self.memory is not None and self.records is not None
        in_store = bool(self._store_call("delete_ban", kind, identifier))
        in_memory = self.memory.delete_ban(kind, identifier)  # the fallback's copy, if any
        in_db = self.records.delete(kind, identifier)
        if not (in_store or in_memory or in_db):
            raise NotFound(f"no active ban on {kind} {identifier!r}")
        audit.info(
            "ban lifted: %s %s by %s",
            kind,
            identifier,
            actor,
            extra={"event": "ban_lifted", "ban_kind": kind, "ban_identifier": identifier, "actor": actor},
        )
        return {"kind": kind, "identifier": identifier, "lifted": True}

    def list_bans(self) -> list[dict[str, Any]]:
        """Active bans (the database record), soonest to end first."""
        assert self.records is not None
        now = time.time()
        return [
            {
                "kind": r["kind"],
                "identifier": r["identifier"],
                "until": datetime.fromtimestamp(r["until_ms"] / 1000, UTC).isoformat(timespec="seconds"),
                "remaining_s": max(0, math.ceil(r["until_ms"] / 1000 - now)),
                "strikes": r["strikes"],
                "reason": r["reason"],
                "actor": r["actor"],
            }
            for r in self.records.active()
        ]

    def ban_remaining(self, kind: str, identifier: str) -> int | None:
        """Seconds left on a ban of ``kind:identifier``, ``None`` when not banned (Socket.IO
        connect refuses banned identities with this)."""
        ms = self._store_call("ban_remaining_ms", kind, str(identifier))
        return None if ms is None else _seconds(ms)

    def _store_call(self, method: str, *args: Any) -> Any:
        """A ban operation on Redis, or on the per-process store while Redis is down."""
        assert self.memory is not None
        if self.redis is not None:
            try:
                return self.breaker.call(getattr(self.redis, method), *args)
            except (CircuitOpen, redis_lib.RedisError):
                if self.fail_mode == "closed" and method == "ban_remaining_ms":
                    raise ServiceUnavailable("The rate limiter is unavailable; retry shortly.", retry_after=1) from None
        return getattr(self.memory, method)(*args)

    def _record_ban(
        self, kind: str, identifier: str, ttl_ms: int, strikes: int, *, reason: str, actor: str
    ) -> dict[str, Any]:
        assert self.records is not None
        until_ms = int(time.time() * 1000) + ttl_ms
        try:
            self.records.upsert(kind, identifier, until_ms, strikes, reason, actor)
        except sa.exc.SQLAlchemyError:
            # The ban is live in the store; only its survival across a restart is at risk.
            logger.exception("rate limiter: could not record the ban of %s %s in the database", kind, identifier)
        self._count(self.bans_issued, kind)
        seconds = _seconds(ttl_ms)
        audit.info(
            "ban: %s %s for %ss (strike %s, %s) by %s",
            kind,
            identifier,
            seconds,
            strikes,
            reason,
            actor,
            extra={"event": "ban", "ban_kind": kind, "ban_identifier": identifier, "seconds": seconds, "actor": actor},
        )
        if self._hooks is not None:
            self._hooks.trigger(
                "identity_banned", kind=kind, identifier=identifier, seconds=seconds, strikes=strikes, actor=actor
            )
        return {
            "kind": kind,
            "identifier": identifier,
            "seconds": seconds,
            "until": datetime.fromtimestamp(until_ms / 1000, UTC).isoformat(timespec="seconds"),
            "strikes": strikes,
        }

    # -- health, metrics, dispose ------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        if self.redis is None:
            return {"status": "healthy", "store": "in-process"}
        if self.breaker.is_open and self.breaker.allow():
            try:
                self.redis.ping()
            except redis_lib.RedisError as exc:
                self.breaker.failure(exc)
            else:
                self.breaker.success()
        if not self.breaker.is_open:
            return {"status": "healthy", "store": "redis"}
        report: dict[str, Any] = {"store": "redis", "circuit": self.breaker.health()}
        if self.fail_mode == "open":
            report.update(status="degraded", fallback="in-process")
        else:
            report.update(status="unhealthy", error="Redis unreachable (RATE_LIMIT_FAIL_MODE=closed)")
        return report

    def metrics(self) -> dict[str, dict[str, int]]:
        """Counters for the metrics exporter: rejections by level, refusals of banned
        identities and new bans by kind."""
        with self._counter_lock:
            return {
                "rejections": dict(self.rejections),
                "banned_requests": dict(self.banned_requests),
                "bans": dict(self.bans_issued),
            }

    def dispose(self) -> None:
        if self.redis is not None:
            self.redis.close()


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _policy_name(state: TierState) -> str:
    if len(state.check.tiers) == 1:
        return state.check.level
    return f"{state.check.level}-{state.tier.window_s}s"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValidationError(details=[{"param": "kind", "message": f"one of {', '.join(KINDS)}"}])
