"""RedisManager: redis-py for ``REDIS_URL``, or an in-process stand-in (SPEC §10).

- ``redis.client`` — a redis-py client (connection pool, socket and connect timeouts) or
  ``None`` when ``REDIS_URL`` is unset; ``redis.key(*parts)`` builds a prefixed key.
- ``redis.breaker`` — the Redis :class:`~core.breaker.CircuitBreaker`; every call below goes
  through it, and other managers (the limiter, the WebSocket manager) use it for their own
  scripts. A background probe closes it once Redis answers again.
- ``cache_get(key)`` / ``cache_set(key, value, ttl)`` / ``cache_delete(*keys)`` /
  ``cache_set_if_newer(key, value, version, ttl)`` — JSON values under the key prefix. They are
  *cache* helpers: when Redis is down they miss (``cache_get`` returns ``None``, the setters
  return ``False``) instead of failing the request.
- ``publish(channel, message)`` / ``subscribe(channel, callback)`` — JSON messages on prefixed
  channels; a subscription reconnects by itself and exposes ``connected`` and ``generation``
  (incremented on every (re)connect) so that a subscriber knows when it may have missed
  messages. Subscriptions made in ``init_app`` start reading in :meth:`RedisManager.start`.

The backend is chosen once in ``init_app``: :class:`~core.data.redis_backends.RedisBackend`,
or without ``REDIS_URL`` :class:`~core.data.redis_backends.MemoryBackend` (the same interface
served in-process, one process only).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, ClassVar

import redis as redis_lib
from flask import Flask

from core.breaker import CircuitBreaker
from core.data.redis_backends import (
    REDIS_DOWN,
    REDIS_FAILURES,
    Backend,
    Callback,
    MemoryBackend,
    RedisBackend,
    Subscription,
)
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager


class RedisManager(Manager):
    name: ClassVar[str] = "redis"

    prefix: str
    breaker: CircuitBreaker
    _backend: Backend

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._started = False

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
        url = settings["REDIS_URL"]
        self._backend = RedisBackend(url, settings["REDIS_SOCKET_TIMEOUT"], self.breaker) if url else MemoryBackend()

    # -- keys --------------------------------------------------------------------------------
    @property
    def client(self) -> redis_lib.Redis | None:
        """The redis-py client (its connection pool is shared by every Redis user), or None."""
        return self._backend.client

    @property
    def backend(self) -> str:
        return self._backend.name

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- JSON cache --------------------------------------------------------------------------
    def cache_get(self, key: str, default: Any = None) -> Any:
        """The JSON value at ``prefix + key``; ``default`` on a miss or when Redis is down."""
        try:
            raw = self._backend.get(self.prefix + key)
        except REDIS_DOWN:
            return default
        return default if raw is None else json.loads(raw)

    def cache_set(self, key: str, value: Any, ttl: float) -> bool:
        """Store ``value`` as JSON for ``ttl`` seconds; False when Redis is down."""
        try:
            self._backend.set(self.prefix + key, _dump(value), ttl)
        except REDIS_DOWN:
            return False
        return True

    def cache_set_if_newer(self, key: str, value: dict[str, Any], version: int, ttl: float) -> bool:
        """Like :meth:`cache_set` for a dict with a ``version``: never replaces a newer one.

        Returns False when Redis is down (the caller must treat the cached copy as unknown).
        """
        try:
            self._backend.set_if_newer(self.prefix + key, _dump({**value, "version": version}), version, ttl)
        except REDIS_DOWN:
            return False
        return True

    def cache_delete(self, *keys: str) -> bool:
        if not keys:
            return True
        try:
            self._backend.delete(*(self.prefix + k for k in keys))
        except REDIS_DOWN:
            return False
        return True

    # -- pub/sub -----------------------------------------------------------------------------
    def publish(self, channel: str, message: Any) -> bool:
        """Publish a JSON message on ``prefix + channel``; False when Redis is down."""
        try:
            self._backend.publish(self.prefix + channel, _dump(message))
        except REDIS_DOWN:
            return False
        return True

    def subscribe(self, channel: str, callback: Callback) -> Subscription:
        """Call ``callback(message)`` for every JSON message on ``prefix + channel``.

        With Redis the messages are read by a daemon thread (a greenlet under gevent), started
        by :meth:`start` (at once after it), that reconnects every second while Redis is down;
        ``subscription.generation`` increases on each (re)connect, so a subscriber that caches
        knows when messages may have been missed.
        """
        sub = self._backend.subscribe(self.prefix + channel, callback)
        self._subscriptions.append(sub)
        if self._started:
            sub.start()
        return sub

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the subscriptions declared so far and the background probe of the breaker."""
        self._started = True
        self._backend.start()
        for sub in self._subscriptions:
            sub.start()

    def ping(self) -> float:
        """Round trip in ms through the breaker; raises when Redis is down."""
        started = time.perf_counter()
        self._backend.ping()
        return round((time.perf_counter() - started) * 1e3, 2)

    def health(self) -> dict[str, Any]:
        """The breaker's state (a closed circuit is pinged outside it): never changes it."""
        return self._backend.health()

    def dispose(self) -> None:
        for sub in self._subscriptions:
            sub.close()
        self._subscriptions.clear()
        self._started = False
        if "_backend" in vars(self):  # absent when init_app never ran
            self._backend.close()


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


__all__ = ["REDIS_DOWN", "REDIS_FAILURES", "RedisManager", "Subscription"]
