"""The state caches in front of ``keel_state`` (SPEC §9): Redis write-through, and an
in-process cache invalidated over Redis pub/sub.

- Redis (``state:<kind>:<key>``) is shared by the workers; a cached record is only ever
  replaced by a newer version (``RedisManager.cache_set_if_newer``). When a write-through
  fails (Redis down), the key is remembered and deleted as soon as Redis answers again
  (``STATE_CACHE_TTL`` bounds the case where this process dies first).
- Each process keeps records for ``STATE_LOCAL_CACHE_TTL`` seconds. Every change is published
  on ``state:invalidate``; the other processes then know that version exists. The local copy
  is only trusted while that subscription is connected, and only for the subscription's
  current *generation*: a reconnect (messages may have been missed) empties it in effect.
- Versions only grow, so the local cache keeps, per record, the newest version this process
  has seen — stored, published by another process, or beaten it in a compare-and-set — and
  never stores an older one. Without a record it holds a *tombstone* (the version, no data):
  a miss that still refuses older copies, from Redis or from a write-through still in flight.
  Dropping the entry instead would let an older write-through that finishes late put back a
  record older than the database.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from core.data.redis_backends import Subscription

logger = logging.getLogger(__name__)

INVALIDATE_CHANNEL = "state:invalidate"
LOCAL_CACHE_MAX = 10_000

# A local entry: (expires_at, generation, version, record JSON or None for a tombstone).
Entry = tuple[float, int, int, str | None]


class CacheBackend(Protocol):
    """What the state cache uses of :class:`~core.managers.redis.RedisManager`."""

    def cache_get(self, key: str, default: Any = None) -> Any: ...

    def cache_set_if_newer(self, key: str, value: dict[str, Any], version: int, ttl: float) -> bool: ...

    def cache_delete(self, *keys: str) -> bool: ...

    def publish(self, channel: str, message: Any) -> bool: ...

    def subscribe(self, channel: str, callback: Callable[[Any], None]) -> Subscription: ...


def cache_key(kind: str, key: str) -> str:
    return f"state:{kind}:{key}"


class StateCache:
    """The caches of one StateManager; reads go local → Redis, writes go through both."""

    def __init__(self, redis: CacheBackend, *, ttl: int, local_ttl: float) -> None:
        self._redis = redis
        self.ttl = ttl
        self.local_ttl = local_ttl
        self._local: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._origin = uuid.uuid4().hex
        # Declared now, read from RedisManager.start() on (no local cache: no subscription).
        self.subscription: Subscription | None = (
            redis.subscribe(INVALIDATE_CHANNEL, self._on_invalidate) if local_ttl > 0 else None
        )

    def generation(self) -> int:
        """The subscription's generation, or -1 when the in-process cache must not be used.

        Read it *before* reading a record from Redis or the database, and store the record
        under it: a reconnect in between then makes the stored copy a miss.
        """
        sub = self.subscription
        if sub is None or not sub.connected:
            return -1
        return sub.generation

    # -- reads -------------------------------------------------------------------------------
    def lookup(self, kind: str, key: str) -> tuple[dict[str, Any] | None, int]:
        """``(record or None, generation)``: the local copy, else Redis's unless it is older
        than a version this process knows of. Store a database read with that generation."""
        if self._pending:
            self.flush_pending()
        generation = self.generation()
        cached = self._local_get(kind, key, generation)
        if cached is not None:
            return cached, generation
        hit = self._redis.cache_get(cache_key(kind, key))
        if isinstance(hit, dict) and "version" in hit and hit["version"] >= self._floor(kind, key, generation):
            self._local_put(kind, key, hit, generation)
            return hit, generation
        return None, generation

    # -- writes ------------------------------------------------------------------------------
    def store(self, record: dict[str, Any], generation: int) -> None:
        """Write ``record`` through Redis (never over a newer one) and keep it locally."""
        key = cache_key(record["kind"], record["key"])
        if not self._redis.cache_set_if_newer(key, record, record["version"], self.ttl):
            with self._pending_lock:
                self._pending.add(key)
        self._local_put(record["kind"], record["key"], record, generation)

    def changed(self, record: dict[str, Any], generation: int) -> None:
        """A committed change: store it and tell the other processes its version."""
        self.store(record, generation)
        message = {"o": self._origin, "k": record["kind"], "key": record["key"], "v": record["version"]}
        self._redis.publish(INVALIDATE_CHANNEL, message)

    def newer_exists(self, kind: str, key: str, version: int, generation: int) -> None:
        """The database holds ``version`` (or newer): refuse older copies from now on."""
        if generation < 0 or self.local_ttl <= 0:
            return
        with self._lock:
            entry = self._local.get((kind, key))
            if entry is not None and (entry[1], entry[2]) >= (generation, version):
                return  # it already knows this version (or comes from a newer generation)
            self._set((kind, key), (time.monotonic() + self.local_ttl, generation, version, None))

    def flush_pending(self) -> None:
        """Delete Redis entries that missed an update while Redis was down."""
        if not self._pending:
            return
        with self._pending_lock:
            keys = list(self._pending)
        if self._redis.cache_delete(*keys):
            with self._pending_lock:
                self._pending.difference_update(keys)
            logger.info("state cache: dropped %d entries written while Redis was down", len(keys))

    # -- the in-process cache ----------------------------------------------------------------
    def _local_get(self, kind: str, key: str, generation: int) -> dict[str, Any] | None:
        if generation < 0:
            return None
        with self._lock:
            entry = self._local.get((kind, key))
        if entry is None:
            return None
        expires, gen, _version, raw = entry
        if raw is None or gen != generation or expires <= time.monotonic():
            return None
        record: dict[str, Any] = json.loads(raw)
        return record

    def _local_put(self, kind: str, key: str, record: dict[str, Any], generation: int) -> None:
        if generation < 0 or self.local_ttl <= 0:
            return
        version = int(record["version"])
        raw = json.dumps(record, separators=(",", ":"))
        with self._lock:
            entry = self._local.get((kind, key))
            # Never replace a newer version (a record or a tombstone) with an older one, nor an
            # entry of a newer generation. An expired entry is no longer served, but its
            # version still bounds what may be stored: versions only grow.
            if entry is not None and (entry[1], entry[2]) > (generation, version):
                return
            self._set((kind, key), (time.monotonic() + self.local_ttl, generation, version, raw))

    def _set(self, slot: tuple[str, str], entry: Entry) -> None:
        """Under the lock: store ``entry``, evicting the least recently stored beyond the cap."""
        self._local[slot] = entry
        self._local.move_to_end(slot)
        while len(self._local) > LOCAL_CACHE_MAX:
            self._local.popitem(last=False)

    def _floor(self, kind: str, key: str, generation: int) -> int:
        """The newest version this process knows of in this generation, or 0."""
        with self._lock:
            entry = self._local.get((kind, key))
        if entry is None or entry[1] != generation:
            return 0
        return entry[2]

    def _on_invalidate(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("o") == self._origin:
            return
        kind, key, version = message.get("k"), message.get("key"), message.get("v")
        if isinstance(kind, str) and isinstance(key, str) and isinstance(version, int):
            self.newer_exists(kind, key, version, self.generation())

    # -- lifecycle ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"local_cache_entries": len(self._local)}
        if self._pending:
            report["pending_invalidations"] = len(self._pending)
        return report

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
