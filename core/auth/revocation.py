"""The deny-list of JWTs and API keys (SPEC §6): the database decides, Redis answers fast.

- A JWT ``jti`` or refresh family (``fam``) is denied in the ``auth_revocations`` table (the
  source of truth) and in Redis (``auth:deny:jti:<jti>`` / ``auth:deny:fam:<fam>``, TTL = the
  remaining lifetime); every token of a user is revoked by bumping the user's token version
  (``users.token_version``, copied to ``auth:ver:<user id>``).
- A revoked API key is marked ``auth:deny:key:<id>`` (its record in ``api_keys`` is the
  source of truth; the mark tells the other workers before their cached copy expires).
- :meth:`Revocation.token_keys` / :meth:`Revocation.api_key_keys` name the Redis keys whose
  values decide; the rate limiter reads them in its single round trip and the caller hands the
  values to :meth:`Revocation.check_token` / :meth:`Revocation.api_key_revoked`.
- Redis down → the database answers; both down → 503 (``DatabaseUnavailable`` from the
  database manager). A key ``auth:synced`` says Redis holds the database's deny-list; when it
  is missing (Redis restarted empty) or Redis missed writes, the database answers and Redis is
  filled again (:meth:`Revocation.resync`). Without Redis, the database's "not revoked" answer
  is reused for ``DB_CHECK_CACHE_TTL`` seconds, so another process's revocation is seen within
  1 s without a query per request; this process's own revocations clear that cache at once.

Redis is used only through the Redis manager (``redis.client``, ``redis.breaker``,
``redis.key()``), SQL only through the database manager's helpers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis as redis_lib
import sqlalchemy as sa

from core.errors import ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    from core.auth.users import UserStore
    from core.managers.database import DatabaseManager
    from core.managers.redis import RedisManager

logger = logging.getLogger(__name__)

DB_CHECK_CACHE_TTL = 0.5
DB_CHECK_CACHE_SIZE = 4096
API_KEY_MARK_TTL = 3600  # longer than any API_KEY_CACHE_TTL: every worker's cached copy is gone by then
# Redis not answering: its own errors, socket errors, or a 503 (the breaker failing fast; in
# a resync also the database manager's DatabaseUnavailable).
_REDIS_DOWN = (redis_lib.RedisError, OSError, ServiceUnavailable)


def revocations_table(metadata: sa.MetaData) -> sa.Table:
    """Declare (once per metadata) ``auth_revocations``. Times are Unix epoch seconds."""
    if "auth_revocations" in metadata.tables:
        return metadata.tables["auth_revocations"]
    return sa.Table(
        "auth_revocations",
        metadata,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),  # jti | fam
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("kind", "value", name="uq_auth_revocations_kind_value"),
    )


class Revocation:
    """One deny-list for JWTs and API keys over the database and Redis."""

    def __init__(self, db: DatabaseManager, redis: RedisManager, users: UserStore) -> None:
        self.db = db
        self.redis = redis
        self.users = users
        self.table = revocations_table(db.metadata)  # declared only; `db.create_all()` creates it
        self._resync_needed = True
        self._resync_lock = threading.Lock()
        self._db_checked: dict[str, float] = {}

    # -- Redis: every call through the Redis manager's breaker; down is not an error here ---------
    def _key(self, *parts: str) -> str:
        return self.redis.key("auth", *parts)

    def _read(self, keys: list[str]) -> list[Any] | None:
        """The values of ``keys``; ``None`` without Redis or while it is down."""
        client = self.redis.client
        if client is None:
            return None
        try:
            return list(self.redis.breaker.call(client.mget, keys))
        except _REDIS_DOWN:
            self._resync_needed = True
            logger.warning("Redis unavailable for the deny-list; the database answers")
            return None

    def _write(self, op: Callable[[redis_lib.Redis], Any], down_message: str) -> None:
        """Run ``op(client)``; while Redis is down the database holds the truth and Redis gets
        it at the next resync."""
        client = self.redis.client
        if client is None:
            return
        try:
            self.redis.breaker.call(op, client)
        except _REDIS_DOWN:
            self._resync_needed = True
            logger.warning(down_message)

    # -- JWTs: checks -------------------------------------------------------------------------
    def token_keys(self, claims: dict[str, Any]) -> list[str]:
        """The Redis keys deciding whether a token is revoked, in :meth:`check_token` order."""
        return [
            self._key("deny", "jti", claims["jti"]),
            self._key("deny", "fam", claims["fam"]),
            self._key("ver", claims["sub"]),
            self._key("synced"),
        ]

    def check_token(self, claims: dict[str, Any], values: list[Any] | None = None) -> None:
        """Raise :class:`Unauthorized` if the token is revoked; ``values`` were read for
        :meth:`token_keys` by the caller (``None``: read them here)."""
        if values is None:
            values = self._read(self.token_keys(claims))
        if values is None or values[3] is None or self._resync_needed:
            # Redis is down, has no copy of the deny-list (restarted empty) or missed writes
            # while it was down: the database decides, and Redis is filled again.
            self._check_db(claims)
            if values is not None:
                self.resync()
            return
        if values[0] is not None or values[1] is not None:
            raise Unauthorized()
        version = values[2]
        if claims["ver"] != (int(version) if version is not None else 0):
            raise Unauthorized()

    def _check_db(self, claims: dict[str, Any]) -> None:
        """The database's answer (one query). A "not revoked" answer is remembered for
        ``DB_CHECK_CACHE_TTL`` seconds; this process's own revocations clear it at once."""
        jti = claims["jti"]
        deadline = self._db_checked.get(jti)
        if deadline is not None and time.monotonic() < deadline:
            return
        query = self._db_query(claims)
        try:
            row = self.db.read(lambda conn: conn.execute(query).first())
        except ServiceUnavailable:
            logger.error("token revocation cannot be checked: Redis and the database are unavailable")
            raise
        if row is None or row.denied or not row.active or int(row.token_version) != claims["ver"]:
            raise Unauthorized()
        if len(self._db_checked) >= DB_CHECK_CACHE_SIZE:
            self._db_checked.clear()
        self._db_checked[jti] = time.monotonic() + DB_CHECK_CACHE_TTL

    def _db_query(self, claims: dict[str, Any]) -> sa.Select[Any]:
        """The user's token version and active flag, and whether the jti or family is denied."""
        r, u = self.table, self.users.table
        denied = (
            sa.select(sa.func.count())
            .select_from(r)
            .where(
                sa.or_(
                    sa.and_(r.c.kind == "jti", r.c.value == claims["jti"]),
                    sa.and_(r.c.kind == "fam", r.c.value == claims["fam"]),
                ),
                r.c.expires_at > time.time(),
            )
            .scalar_subquery()
        )
        return sa.select(u.c.token_version, u.c.active, denied.label("denied")).where(u.c.id == int(claims["sub"]))

    def resync(self) -> None:
        """Copy the database's live deny-list and token versions into Redis, then mark it synced."""
        client = self.redis.client
        if client is None or not self._resync_lock.acquire(blocking=False):
            return
        try:
            now = time.time()
            r = self.table
            query = sa.select(r.c.kind, r.c.value, r.c.expires_at).where(r.c.expires_at > now)
            rows = self.db.read(lambda conn: conn.execute(query).all())
            versions = self.users.versions()
            pipe = client.pipeline(transaction=False)
            for row in rows:
                pipe.set(self._key("deny", row.kind, row.value), "1", ex=max(1, int(row.expires_at - now) + 1))
            for user_id, version in versions.items():
                pipe.set(self._key("ver", str(user_id)), version)
            pipe.set(self._key("synced"), str(int(now)))
            self.redis.breaker.call(pipe.execute)
            self._resync_needed = False
            logger.info("token deny-list copied to Redis (%d entries, %d versions)", len(rows), len(versions))
        except _REDIS_DOWN:
            logger.warning("token deny-list resync to Redis failed; will retry")
        finally:
            self._resync_lock.release()

    # -- JWTs: writes -------------------------------------------------------------------------
    def deny(self, kind: str, value: str, user_id: int | None, expires_at: float) -> None:
        """Deny a ``jti`` or a ``fam`` until ``expires_at`` (expired entries are purged)."""
        self._db_checked.clear()
        now = time.time()
        r = self.table
        try:
            with self.db.transaction() as conn:
                conn.execute(sa.delete(r).where(r.c.expires_at < now - 60))
            with self.db.transaction() as conn:
                conn.execute(
                    sa.insert(r).values(kind=kind, value=value, user_id=user_id, expires_at=expires_at, created_at=now)
                )
        except sa.exc.IntegrityError:
            pass  # already revoked
        ttl = max(1, int(expires_at - now) + 1)
        self._write(
            lambda c: c.set(self._key("deny", kind, value), "1", ex=ttl),
            "Redis unavailable: revocation stored in the database only until it is back",
        )

    def version_changed(self, user_id: int, version: int) -> None:
        """A user's token version was bumped in the database (every older token is revoked)."""
        self._db_checked.clear()
        self._write(
            lambda c: c.set(self._key("ver", str(user_id)), version),
            "Redis unavailable: revocation stored in the database only until it is back",
        )

    # -- API keys -----------------------------------------------------------------------------
    def api_key_keys(self, key_id: str) -> list[str]:
        """The Redis key marking a revoked API key (for :meth:`api_key_revoked`)."""
        return [self._key("deny", "key", key_id)]

    def api_key_revoked(self, key_id: str, values: list[Any] | None = None) -> bool:
        """Whether another worker revoked the key (its record may still be in this one's
        cache). Without Redis the cache TTL bounds the staleness: ``False``."""
        if values is None:
            values = self._read(self.api_key_keys(key_id))
        return bool(values and values[0] is not None)

    def deny_api_key(self, key_id: str) -> None:
        self._write(
            lambda c: c.set(self._key("deny", "key", key_id), "1", ex=API_KEY_MARK_TTL),
            "Redis unavailable: other workers see the API key revocation within the cache TTL",
        )
