"""RedisManager: redis-py client for REDIS_URL (SPEC §10).

Minimal first version: ``redis.client`` (``None`` when ``REDIS_URL`` is unset) and
``redis.key(*parts)`` for prefixed keys. (Extended by the data issue: in-process fallback,
cache helpers, pub/sub, circuit breaker.)
"""

from __future__ import annotations

from typing import Any, ClassVar

import redis as redis_lib
from flask import Flask

from core.managers.base import Manager


class RedisManager(Manager):
    name: ClassVar[str] = "redis"

    def __init__(self, app: Flask | None = None) -> None:
        self.client: redis_lib.Redis | None = None
        self.prefix = "keel:"
        super().__init__(app)

    def init_app(self, app: Flask) -> None:
        super().init_app(app)
        settings = app.extensions["keel"].settings
        self.prefix = settings["REDIS_KEY_PREFIX"]
        if settings["REDIS_URL"]:
            timeout = settings["REDIS_SOCKET_TIMEOUT"]
            self.client = redis_lib.Redis.from_url(
                settings["REDIS_URL"], socket_timeout=timeout, socket_connect_timeout=timeout
            )

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def health(self) -> dict[str, Any]:
        if self.client is None:
            return {"status": "healthy", "backend": "in-process"}
        try:
            self.client.ping()
        except redis_lib.RedisError as exc:
            return {"status": "unhealthy", "error": type(exc).__name__}
        return {"status": "healthy", "backend": "redis"}

    def dispose(self) -> None:
        if self.client is not None:
            self.client.close()
