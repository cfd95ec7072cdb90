"""The two backends of :class:`~core.managers.redis.RedisManager`, behind one interface.

:class:`RedisBackend` runs on redis-py (``REDIS_URL``); :class:`MemoryBackend` is the
in-process stand-in (one process only) used when ``REDIS_URL`` is unset. Both store raw
strings under full (already prefixed) keys and deliver decoded JSON messages to
subscribers; the manager adds the prefix, the JSON encoding and the "Redis is down: a miss"
rule. A :class:`RedisBackend` call goes through the Redis circuit breaker and raises one of
:data:`REDIS_DOWN` when Redis does not answer; a :class:`MemoryBackend` call never fails.

A subscription is created idle; ``start()`` starts its reader (the manager does it in its
own ``start()``, or at once for a subscription made after that).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.breaker import CircuitBreaker, CircuitOpen, Prober

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

# What a RedisBackend call raises when Redis is down (or known to be: the circuit is open).
REDIS_DOWN: tuple[type[BaseException], ...] = (CircuitOpen, *REDIS_FAILURES)

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
    """One channel's subscription; ``generation`` grows on every (re)connect, so that a
    subscriber that caches knows when it may have missed messages."""

    @property
    def connected(self) -> bool: ...

    @property
    def generation(self) -> int: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What RedisManager needs from a backend (keys and channels are already prefixed)."""

    name: str  # "redis" or "in-process", shown in /health

    @property
    def client(self) -> redis_lib.Redis | None: ...

    def get(self, key: str) -> bytes | str | None: ...

    def set(self, key: str, raw: str, ttl: float) -> None: ...

    def set_if_newer(self, key: str, raw: str, version: int, ttl: float) -> None: ...

    def delete(self, *keys: str) -> None: ...

    def publish(self, channel: str, raw: str) -> None: ...

    def subscribe(self, channel: str, callback: Callback) -> Subscription: ...

    def ping(self) -> None: ...

    def start(self) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class RedisBackend:
    """redis-py with a connection pool and socket timeouts; every call through ``breaker``."""

    name = "redis"

    def __init__(self, url: str, timeout: float, breaker: CircuitBreaker) -> None:
        self._client = redis_lib.Redis.from_url(  # type: ignore[call-overload]  # types-redis: no protocol=
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One retry on a fresh connection covers a pooled socket that died with a Redis
            # restart; more retries would only delay the breaker.
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
            # RESP2 on every redis-py version (8 defaults to RESP3): the Lua scripts' replies
            # (nil and false, nested arrays) and the limiter's reply reader are read as RESP2.
            protocol=2,
        )
        self.breaker = breaker
        self._set_if_newer = self._client.register_script(_SET_IF_NEWER)
        self._prober = Prober("redis")
        self._prober.add(breaker, self.ping)

    @property
    def client(self) -> redis_lib.Redis:
        return self._client

    def get(self, key: str) -> bytes | None:
        return self.breaker.call(self._client.get, key)

    def set(self, key: str, raw: str, ttl: float) -> None:
        self.breaker.call(self._client.set, key, raw, max(1, int(ttl)))

    def set_if_newer(self, key: str, raw: str, version: int, ttl: float) -> None:
        self.breaker.call(self._set_if_newer, [key], [raw, version, max(1, int(ttl))])

    def delete(self, *keys: str) -> None:
        self.breaker.call(self._client.delete, *keys)

    def publish(self, channel: str, raw: str) -> None:
        self.breaker.call(self._client.publish, channel, raw)

    def subscribe(self, channel: str, callback: Callback) -> RedisSubscription:
        return RedisSubscription(self._client, channel, callback)

    def ping(self) -> None:
        self.breaker.call(self._client.ping)

    def start(self) -> None:
        self._prober.start()  # closes the circuit once Redis answers again

    def health(self) -> dict[str, Any]:
        """Reads the breaker; pings only a closed circuit, and outside it (never changes it)."""
        report: dict[str, Any] = {"status": "healthy", "backend": self.name}
        error = "CircuitOpen" if self.breaker.is_open else None
        if error is None:
            started = time.perf_counter()
            try:
                self._client.ping()
                report["latency_ms"] = round((time.perf_counter() - started) * 1e3, 2)
            except REDIS_FAILURES as exc:
                error = type(exc).__name__
        if error is not None:
            report.update(status="degraded", fallback="cache bypassed; in-process fallbacks", error=error)
        report["breaker"] = self.breaker.health()
        return report

    def close(self) -> None:
        self._prober.stop()
        self._client.close()


class RedisSubscription:
    """A reconnecting subscriber on one channel (a daemon thread, a greenlet under gevent)."""

    def __init__(self, client: redis_lib.Redis, channel: str, callback: Callback) -> None:
        self._client = client
        self._channel = channel
        self._callback = callback
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
        if self._thread.ident is None and not self._stop.is_set():  # once; never after close()
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


class MemorySubscription:
    """An in-process subscription: always connected, delivered synchronously by ``publish``."""

    def __init__(self, store: MemoryBackend, channel: str, callback: Callback) -> None:
        self._store = store
        self.channel = channel
        self.callback = callback

    @property
    def connected(self) -> bool:
        return True

    @property
    def generation(self) -> int:
        return 1

    def start(self) -> None:
        """Nothing to start: ``publish`` calls the callback in the publisher's thread."""

    def close(self) -> None:
        self._store.unsubscribe(self)


class MemoryBackend:
    """The in-process stand-in for Redis (one process; used when ``REDIS_URL`` is unset)."""

    name = "in-process"
    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, tuple[float, str]] = {}
        self._subs: dict[str, list[MemorySubscription]] = {}

    @property
    def client(self) -> None:
        return None

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
            self._store(key, raw, ttl)

    def set_if_newer(self, key: str, raw: str, version: int, ttl: float) -> None:
        with self._lock:
            item = self._data.get(key)
            if item is not None and item[0] > time.monotonic():
                current = json.loads(item[1])
                if isinstance(current, dict) and int(current.get("version", -1)) >= version:
                    return
            self._store(key, raw, ttl)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def _store(self, key: str, raw: str, ttl: float) -> None:
        """Under the lock: store, first dropping expired (then the oldest) keys when full."""
        if len(self._data) >= self.MAX_KEYS:
            now = time.monotonic()
            for old in [k for k, (exp, _) in self._data.items() if exp <= now]:
                del self._data[old]
            while len(self._data) >= self.MAX_KEYS:
                self._data.pop(next(iter(self._data)))
        self._data[key] = (time.monotonic() + ttl, raw)

    def subscribe(self, channel: str, callback: Callback) -> MemorySubscription:
        sub = MemorySubscription(self, channel, callback)
        with self._lock:
            self._subs[channel] = [*self._subs.get(channel, []), sub]
        return sub

    def unsubscribe(self, sub: MemorySubscription) -> None:
        with self._lock:
            self._subs[sub.channel] = [s for s in self._subs.get(sub.channel, []) if s is not sub]

    def publish(self, channel: str, raw: str) -> None:
        for sub in self._subs.get(channel, ()):
            try:
                sub.callback(json.loads(raw))
            except Exception:
                # Same contract as Redis: a raising subscriber does not fail the publisher.
                logger.exception("in-process subscription %s: callback raised", channel)

    def ping(self) -> None:
        """Always answers."""

    def start(self) -> None:
        """No background work."""

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "backend": self.name}

    def close(self) -> None:
        """Nothing to release."""


__all__ = [
    "REDIS_DOWN",
    "REDIS_FAILURES",
    "Backend",
    "MemoryBackend",
    "MemorySubscription",
    "RedisBackend",
    "RedisSubscription",
    "Subscription",
]
