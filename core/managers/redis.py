"""RedisManager: redis-py for ``REDIS_URL``, or an in-process stand-in (SPEC §10).

- ``redis.client`` — a redis-py client (connection pool, socket and connect timeouts) or
  ``None`` when ``REDIS_URL`` is unset; ``redis.key(*parts)`` builds a prefixed key.
- ``redis.breaker`` — the Redis :class:`~core.breaker.CircuitBreaker`; every call below goes
  through it, and other managers (the limiter, the WebSocket manager) use it for their own
  scripts.
- ``cache_get(key)`` / ``cache_set(key, value, ttl)`` / ``cache_delete(*keys)`` /
  ``cache_set_if_newer(key, value, version, ttl)`` — JSON values under the key prefix. They are
  *cache* helpers: when Redis is down they miss (``cache_get`` returns ``None``, the setters
  return ``False``) instead of failing the request.
- ``publish(channel, message)`` / ``subscribe(channel, callback)`` — JSON messages on prefixed
  channels; a subscription reconnects by itself and exposes ``connected`` and ``generation``
  (incremented on every (re)connect) so that a subscriber knows when it may have missed
  messages.

Without ``REDIS_URL`` the same interface is served in-process (one process only).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import redis as redis_lib
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.breaker import CircuitBreaker, CircuitOpen
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager


logger = logging.getLogger(__name__)

Callback = Callable[[Any], None]

# Redis errors that mean "Redis is not answering" (a WRONGTYPE or script error does not).
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis_lib.ConnectionError,
    redis_lib.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)

# What a cache helper treats as "Redis is down": a miss, not an error.
_DOWN: tuple[type[BaseException], ...] = (CircuitOpen, *REDIS_FAILURES)

# Set the JSON value ARGV[1] at KEYS[1] unless the stored value has a version >= ARGV[2]:
# concurrent write-through caches can never replace a newer record with an older one.
_SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  if ok and type(decoded) == 'table' and decoded['version'] and tonumber(decoded['version']) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


class Subscription(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def generation(self) -> int: ...

    def close(self) -> None: ...


class RedisManager(Manager):
    name: ClassVar[str] = "redis"

    def __init__(self) -> None:
        self.client: redis_lib.Redis | None = None
        self.prefix = "keel:"
        self.breaker = CircuitBreaker("redis", failures=REDIS_FAILURES)
        self._memory: _MemoryStore | None = None
        self._subscriptions: list[Any] = []
        self._set_if_newer: Any = None

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        settings = am.settings
        self.prefix = settings["REDIS_KEY_PREFIX"]
        self.breaker = CircuitBreaker(
            "redis",
            failures=REDIS_FAILURES,
            threshold=settings["BREAKER_THRESHOLD"],
            probe_interval=settings["BREAKER_PROBE_INTERVAL"],
        )
        if settings["REDIS_URL"]:
            timeout = settings["REDIS_SOCKET_TIMEOUT"]
            self.client = redis_lib.Redis.from_url(
                settings["REDIS_URL"],
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # One retry on a fresh connection covers a pooled socket that died with a
                # Redis restart; more retries would only delay the breaker.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=30,
            )
            self._set_if_newer = self.client.register_script(_SET_IF_NEWER)
        else:
            self._memory = _MemoryStore()

    # -- keys --------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return "redis" if self.client is not None else "in-process"

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.breaker.call(fn, *args)

    # -- JSON cache --------------------------------------------------------------------------
    def cache_get(self, key: str, default: Any = None) -> Any:
        """The JSON value at ``prefix + key``; ``default`` on a miss or when Redis is down."""
        full = self.prefix + key
        if self._memory is not None:
            raw = self._memory.get(full)
        else:
            assert self.client is not None
            try:
                raw = self._call(self.client.get, full)
            except _DOWN:
                return default
        return default if raw is None else json.loads(raw)

    def cache_set(self, key: str, value: Any, ttl: float) -> bool:
        """Store ``value`` as JSON for ``ttl`` seconds; False when Redis is down."""
        full, raw = self.prefix + key, json.dumps(value, separators=(",", ":"))
        if self._memory is not None:
            self._memory.set(full, raw, ttl)
            return True
        assert self.client is not None
        try:
            self._call(self.client.set, full, raw, max(1, int(ttl)))
        except _DOWN:
            return False
        return True

    def cache_set_if_newer(self, key: str, value: dict[str, Any], version: int, ttl: float) -> bool:
        """Like :meth:`cache_set` for a dict with a ``version``: never replaces a newer one.

        Returns False when Redis is down (the caller must treat the cached copy as unknown).
        """
        full = self.prefix + key
        raw = json.dumps({**value, "version": version}, separators=(",", ":"))
        if self._memory is not None:
            self._memory.set_if_newer(full, raw, version, ttl)
            return True
        try:
            self._call(self._set_if_newer, [full], [raw, version, max(1, int(ttl))])
        except _DOWN:
            return False
        return True

    def cache_delete(self, *keys: str) -> bool:
        full = [self.prefix + k for k in keys]
        if not full:
            return True
        if self._memory is not None:
            self._memory.delete(*full)
            return True
        assert self.client is not None
        try:
            self._call(self.client.delete, *full)
        except _DOWN:
            return False
        return True

    # -- pub/sub -----------------------------------------------------------------------------
    def publish(self, channel: str, message: Any) -> bool:
        """Publish a JSON message on ``prefix + channel``; False when Redis is down."""
        full, raw = self.prefix + channel, json.dumps(message, separators=(",", ":"))
        if self._memory is not None:
            self._memory.publish(full, raw)
            return True
        assert self.client is not None
        try:
            self._call(self.client.publish, full, raw)
        except _DOWN:
            return False
        return True

    def subscribe(self, channel: str, callback: Callback) -> Subscription:
        """Call ``callback(message)`` for every JSON message on ``prefix + channel``.

        With Redis the messages are read by a daemon thread (a greenlet under gevent) that
        reconnects every second while Redis is down; ``subscription.generation`` increases on
        each (re)connect, so a subscriber that caches knows when messages may have been missed.
        """
        full = self.prefix + channel
        sub: Any
        if self._memory is not None:
            sub = self._memory.subscribe(full, callback)
        else:
            assert self.client is not None
            sub = _RedisSubscription(self.client, full, callback, self.breaker)
            sub.start()
        self._subscriptions.append(sub)
        return sub

    # -- lifecycle ---------------------------------------------------------------------------
    def ping(self) -> float:
        """Round trip in ms through the breaker; raises when Redis is down."""
        started = time.perf_counter()
        if self.client is not None:
            self._call(self.client.ping)
        return round((time.perf_counter() - started) * 1e3, 2)

    def health(self) -> dict[str, Any]:
        if self.client is None:
            return {"status": "healthy", "backend": "in-process"}
        try:
            latency = self.ping()
        except _DOWN as exc:
            return {
                "status": "degraded",
                "backend": "redis",
                "fallback": "cache bypassed; in-process fallbacks",
                "error": type(exc).__name__,
                "breaker": self.breaker.health(),
            }
        return {"status": "healthy", "backend": "redis", "latency_ms": latency, "breaker": self.breaker.health()}

    def dispose(self) -> None:
        for sub in self._subscriptions:
            sub.close()
        self._subscriptions.clear()
        if self.client is not None:
            self.client.close()


class _RedisSubscription:
    """A reconnecting subscriber on one channel (a daemon thread, a greenlet under gevent)."""

    def __init__(self, client: redis_lib.Redis, channel: str, callback: Callback, breaker: CircuitBreaker) -> None:
        self._client = client
        self._channel = channel
        self._callback = callback
        self._breaker = breaker
        self._stop = threading.Event()
        self._connected = False
        self._generation = 0
        self._thread = threading.Thread(target=self._run, name=f"keel-redis-sub:{channel}", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def generation(self) -> int:
        return self._generation

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=3)

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                self._generation += 1
                self._connected = True
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
            except REDIS_FAILURES as exc:
                if self._connected:
                    logger.warning("redis subscription %s lost (%s); reconnecting", self._channel, type(exc).__name__)
                self._connected = False
                self._stop.wait(1.0)
            finally:
                self._connected = False
                try:
                    pubsub.close()
                except REDIS_FAILURES:
                    pass

    def _deliver(self, raw: bytes | str) -> None:
        try:
            self._callback(json.loads(raw))
        except Exception:
            # One bad message or a raising subscriber must not end the subscription thread.
            logger.exception("redis subscription %s: callback raised", self._channel)


class _MemorySubscription:
    def __init__(self, store: _MemoryStore, channel: str, callback: Callback) -> None:
        self._store = store
        self.channel = channel
        self.callback = callback

    @property
    def connected(self) -> bool:
        return True

    @property
    def generation(self) -> int:
        return 1

    def close(self) -> None:
        self._store.unsubscribe(self)


class _MemoryStore:
    """The in-process stand-in for Redis (one process; used when ``REDIS_URL`` is unset)."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, tuple[float, str]] = {}
        self._subs: dict[str, list[_MemorySubscription]] = {}

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] <= time.monotonic():
                del self._data[key]
                return None
            return item[1]

    def set(self, key: str, raw: str, ttl: float) -> None:
        with self._lock:
            if len(self._data) >= self.MAX_KEYS:
                self._expire()
            self._data[key] = (time.monotonic() + ttl, raw)

    def set_if_newer(self, key: str, raw: str, version: int, ttl: float) -> None:
        with self._lock:
            item = self._data.get(key)
            if item is not None and item[0] > time.monotonic():
                current = json.loads(item[1])
                if isinstance(current, dict) and int(current.get("version", -1)) >= version:
                    return
            if len(self._data) >= self.MAX_KEYS:
                self._expire()
            self._data[key] = (time.monotonic() + ttl, raw)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
            del self._data[key]
        while len(self._data) >= self.MAX_KEYS:
            self._data.pop(next(iter(self._data)))

    def subscribe(self, channel: str, callback: Callback) -> _MemorySubscription:
        sub = _MemorySubscription(self, channel, callback)
        with self._lock:
            self._subs[channel] = [*self._subs.get(channel, []), sub]
        return sub

    def unsubscribe(self, sub: _MemorySubscription) -> None:
        with self._lock:
            self._subs[sub.channel] = [s for s in self._subs.get(sub.channel, []) if s is not sub]

    def publish(self, channel: str, raw: str) -> None:
        for sub in self._subs.get(channel, ()):
            try:
                sub.callback(json.loads(raw))
            except Exception:
                # Same contract as Redis: a raising subscriber does not fail the publisher.
                logger.exception("in-process subscription %s: callback raised", channel)
