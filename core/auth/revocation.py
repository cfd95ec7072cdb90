"""The deny-list of JWTs and API keys (SPEC §6): the database decides, Redis answers fast.

- A JWT ``jti`` or refresh family (``fam``) is denied in the ``auth_revocations`` table (the
  source of truth) and in Redis (``auth:deny:jti:<jti>`` / ``auth:deny:fam:<fam>``, TTL = the
  remaining lifetime).
- Every user has a *state* in Redis, ``auth:ver:<user id>``, copied from the ``users`` row:
  its token version while the user is active, ``-1 - version`` while disabled, ``DELETED``
  (TTL: the longest token lifetime) once the row is gone. A token is valid only while its
  ``ver`` claim (≥ 0) equals that state, so a disabled or deleted user's tokens — and the API
  keys they own — are refused by the same comparison, with no other key to read. A state
  Redis does not hold (a write lost while it was down, a user it never saw) is not taken as
  "version 0": the database decides and Redis learns its answer.
- The states follow the ``users`` table: Keel's own changes are written at once (the user
  store's watchers, :meth:`Revocation.user_changed`), and :meth:`Revocation.sync_users`
  (every ``USERS_SYNC_INTERVAL`` s — longer when the table is so big that a sync takes over
  1/``SYNC_DUTY`` of that —, by one worker at a time) compares a fingerprint of the table
  with the one Redis was last synced from and copies the table again when they differ — so a
  row deleted or disabled by hand (an operator's ``DELETE``) is refused within that interval,
  as the database path sees it within ``DB_CHECK_CACHE_TTL``. States are written
  only when at least as new as the one held (``_SET_STATES``), so a stale copy never undoes a
  revocation.
- A revoked API key is marked ``auth:deny:key:<id>`` (its record in ``api_keys`` is the
  source of truth; the mark tells the other workers before their cached copy expires).
- :meth:`Revocation.token_keys` / :meth:`Revocation.api_key_keys` name the Redis keys whose
  values decide; the rate limiter reads them in its single round trip and the caller hands the
  values to :meth:`Revocation.check_token` / the API key manager.
- Redis down → the database answers; both down → 503 (``DatabaseUnavailable`` from the
  database manager). A key ``auth:synced:v2`` says Redis holds the database's deny-list and
  every user's state; when it is missing (Redis restarted empty, or filled by a version of
  Keel that kept no state for version-0 users) or Redis missed writes, the database answers
  and Redis is filled again (:meth:`Revocation.resync`). Without Redis, the database's "not
  revoked" answer is reused for ``DB_CHECK_CACHE_TTL`` seconds, so another process's
  revocation is seen within 1 s without a query per request; this process's own revocations
  clear that cache at once.

Redis is used only through the Redis manager (``redis.client``, ``redis.breaker``,
``redis.key()``), SQL only through the database manager's helpers.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis as redis_lib
import sqlalchemy as sa

from core.errors import ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    from core.auth.users import UserChange, UserStore
    from core.managers.database import DatabaseManager
    from core.managers.redis import RedisManager

logger = logging.getLogger(__name__)

DB_CHECK_CACHE_TTL = 0.5
DB_CHECK_CACHE_SIZE = 4096
API_KEY_MARK_TTL = 3600  # longer than any API_KEY_CACHE_TTL: every worker's cached copy is gone by then
USERS_SYNC_INTERVAL = 2.0
SYNC_DUTY = 20  # a sync waits at least 20 times as long as the last one took
DELETED = -(2**53)  # a deleted user's state: "newer" than any version, matched by no token
_STATES_PER_CALL = 500
# Redis not answering: its own errors, socket errors, or a 503 (the breaker failing fast; in
# a resync also the database manager's DatabaseUnavailable).
_REDIS_DOWN = (redis_lib.RedisError, OSError, ServiceUnavailable)

# Write users' states, each only if it is at least as new as the one held: versions only grow
# (every change bumps them), a disabled user's state -1 - v ranks as v, DELETED above all; an
# equal rank is written (a row enabled or disabled by hand without a bump). KEYS[1]: the set
# of user ids with a live state; KEYS[2..]: their state keys. ARGV: DELETED, its TTL, then
# one (id, state) pair per state key. Returns how many were written.
_SET_STATES = """
local deleted, ttl = ARGV[1], tonumber(ARGV[2])
local function rank(v)
  local n = tonumber(v)
  if not n then return -1 end
  if n >= 0 then return n end
  return -1 - n
end
local written = 0
for i = 2, #KEYS do
  local id, state = ARGV[2 * i - 1], ARGV[2 * i]
  local current = redis.call('GET', KEYS[i])
  if not current or rank(state) >= rank(current) then
    if state == deleted then
      redis.call('SET', KEYS[i], state, 'EX', ttl)
      redis.call('SREM', KEYS[1], id)
    else
      redis.call('SET', KEYS[i], state)
      redis.call('SADD', KEYS[1], id)
    end
    written = written + 1
  end
end
return written
"""


def user_state(token_version: int, active: bool) -> int:
    """The Redis state of an existing user (see the module docstring)."""
    return token_version if active else -1 - token_version


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
    """One deny-list for JWTs and API keys over the database and Redis.

    ``token_lifetime``: the longest a token lives (seconds, leeway included) — how long a
    deleted user's state is kept.
    """

    def __init__(self, db: DatabaseManager, redis: RedisManager, users: UserStore, token_lifetime: int) -> None:
        self.db = db
        self.redis = redis
        self.users = users
        self.token_lifetime = token_lifetime
        self.table = revocations_table(db.metadata)  # declared only; `db.create_all()` creates it
        self._resync_needed = True
        self._resync_lock = threading.Lock()
        self._sync_failing = False
        self.sync_interval = USERS_SYNC_INTERVAL
        self._db_checked: dict[str, float] = {}
        client = redis.client
        self._set_states = client.register_script(_SET_STATES) if client is not None else None
        self._synced_key = self._key("synced", "v2")
        self._users_key = self._key("users")
        self._users_gen_key = self._key("users", "gen")
        self._users_synced_key = self._key("users", "synced")
        self._users_lease_key = self._key("users", "lease")

    # -- Redis: every call through the Redis manager's breaker; down is not an error here ---------
    def _key(self, *parts: str) -> str:
        return self.redis.key("auth", *parts)

    def _state_key(self, user_id: int | str) -> str:
        return self._key("ver", str(user_id))

    def read(self, keys: list[str]) -> list[Any] | None:
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

    def _state_args(self, states: Iterable[tuple[int | str, int]]) -> tuple[list[str], list[Any]]:
        keys: list[str] = [self._users_key]
        args: list[Any] = [DELETED, self.token_lifetime]
        for user_id, state in states:
            keys.append(self._state_key(user_id))
            args += [str(user_id), state]
        return keys, args

    def _store_states(self, states: list[tuple[int | str, int]], client: Any) -> None:
        """Write ``(user id, state)`` pairs through ``_SET_STATES`` (``client``: the Redis
        client or a pipeline), a bounded number per call."""
        assert self._set_states is not None
        for start in range(0, len(states), _STATES_PER_CALL):
            keys, args = self._state_args(states[start : start + _STATES_PER_CALL])
            self._set_states(keys=keys, args=args, client=client)

    # -- JWTs: checks -------------------------------------------------------------------------
    def token_keys(self, claims: dict[str, Any]) -> list[str]:
        """The Redis keys deciding whether a token is revoked, in :meth:`check_token` order."""
        return [
            self._key("deny", "jti", claims["jti"]),
            self._key("deny", "fam", claims["fam"]),
            self._key("ver", claims["sub"]),
            self._synced_key,
        ]

    def check_token(self, claims: dict[str, Any], values: list[Any] | None = None) -> None:
        """Raise :class:`Unauthorized` if the token is revoked; ``values`` were read for
        :meth:`token_keys` by the caller (``None``: read them here)."""
        if values is None:
            values = self.read(self.token_keys(claims))
        if values is None or values[3] is None or self._resync_needed:
            # Redis is down, has no copy of the deny-list (restarted empty) or missed writes
            # while it was down: the database decides, and Redis is filled again.
            self._check_db(claims)
            if values is not None:
                self.resync(full=values[3] is None)
            return
        if values[0] is not None or values[1] is not None:
            raise Unauthorized()
        state = values[2]
        if state is None:
            # Redis holds no state for this user (a lost write, a row added by hand): never
            # "version 0" — the database decides, and Redis learns its answer.
            self._check_db(claims, learn=True)
        elif claims["ver"] != int(state):
            raise Unauthorized()  # an older version, a disabled or a deleted user

    def _check_db(self, claims: dict[str, Any], *, learn: bool = False) -> None:
        """The database's answer (one query). A "not revoked" answer is remembered for
        ``DB_CHECK_CACHE_TTL`` seconds; this process's own revocations clear it at once.
        ``learn``: Redis holds no state for the user — ask the database even when it answered
        shortly before, and copy the user's state to Redis."""
        jti = claims["jti"]
        deadline = self._db_checked.get(jti)
        if not learn and deadline is not None and time.monotonic() < deadline:
            return
        query = self._db_query(claims)
        try:
            row = self.db.read(lambda conn: conn.execute(query).first())
        except ServiceUnavailable:
            logger.error("token revocation cannot be checked: Redis and the database are unavailable")
            raise
        if learn:
            self.learn_user(int(claims["sub"]), None if row is None else user_state(int(row.token_version), row.active))
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

    def resync(self, *, full: bool = True) -> None:
        """Copy the database's live deny-list and the users' states into Redis, then mark it
        synced. ``full``: Redis lost its copy (or never had one) — every user's state is
        written and every state key found by a scan is checked; otherwise the states are
        copied only if the ``users`` table changed since the last copy (as
        :meth:`sync_users`)."""
        client = self.redis.client
        if client is None or not self._resync_lock.acquire(blocking=False):
            return
        try:
            now = time.time()
            r = self.table
            query = sa.select(r.c.kind, r.c.value, r.c.expires_at).where(r.c.expires_at > now)
            rows = self.db.read(lambda conn: conn.execute(query).all())
            pipe = client.pipeline(transaction=False)
            for row in rows:
                pipe.set(self._key("deny", row.kind, row.value), "1", ex=max(1, int(row.expires_at - now) + 1))
            self.redis.breaker.call(pipe.execute)
            count = self._sync_users(client, force=full)
            self.redis.breaker.call(client.set, self._synced_key, str(int(now)))
            self._resync_needed = False
            logger.info("token deny-list copied to Redis (%d entries, %d users)", len(rows), count)
        except _REDIS_DOWN:
            logger.warning("token deny-list resync to Redis failed; will retry")
        finally:
            self._resync_lock.release()

    # -- users' states --------------------------------------------------------------------------
    def user_changed(self, change: UserChange) -> None:
        """A user was created or had its token state changed in the database (a watcher of
        the user store): Redis gets the new state at once."""
        self._db_checked.clear()
        state = user_state(change.token_version, change.active)

        def write(client: redis_lib.Redis) -> None:
            pipe = client.pipeline(transaction=False)
            if change.created:
                # Unconditional: an id is never reused, but on a database created before that
                # was so, a deleted user's state must give way to the new user's.
                pipe.set(self._state_key(change.user_id), state)
                pipe.sadd(self._users_key, str(change.user_id))
            else:
                self._store_states([(change.user_id, state)], pipe)
            pipe.incr(self._users_gen_key)  # the next sync_users copies the table again
            pipe.execute()

        self._write(write, "Redis unavailable: revocation stored in the database only until it is back")

    def learn_user(self, user_id: int, state: int | None) -> None:
        """Copy a user's state read from the database (``None``: no such user) to Redis,
        unless Redis already holds a newer one."""
        if self._set_states is None:
            return
        value = DELETED if state is None else state
        self._write(
            lambda client: self._store_states([(user_id, value)], client),
            "Redis unavailable: a user's state could not be copied; the database answers",
        )

    def sync_users(self) -> None:
        """Copy every user's state to Redis if the ``users`` table changed since the last copy
        (run every :attr:`sync_interval` s; a lease lets one worker at a time do it)."""
        client = self.redis.client
        if client is None:
            return
        try:
            lease_ms = int(self.sync_interval * 1000)
            if self.redis.breaker.call(client.set, self._users_lease_key, "1", nx=True, px=lease_ms):
                started = time.monotonic()
                self._sync_users(client, force=False)
                self.sync_interval = max(USERS_SYNC_INTERVAL, SYNC_DUTY * (time.monotonic() - started))
            if self._sync_failing:
                logger.info("users' states in Redis are synced again")
            self._sync_failing = False
        except _REDIS_DOWN as exc:
            if not self._sync_failing:
                logger.warning("users' states cannot be synced to Redis (%s); will retry", type(exc).__name__)
            self._sync_failing = True

    def _sync_users(self, client: redis_lib.Redis, *, force: bool) -> int:
        """Write every user's state, and DELETED for every id Redis holds a state for that
        the table no longer has; skipped (unless ``force``) when neither the table's
        fingerprint nor Keel's own writes changed since the last copy. ``force`` also scans
        for state keys written before the set of ids existed. The number of users written."""
        # Read Redis before the table: an id added to the set after this read was created
        # after it, so it cannot be taken for a deleted one.
        pipe = client.pipeline(transaction=False)
        pipe.get(self._users_gen_key)
        pipe.get(self._users_synced_key)
        pipe.smembers(self._users_key)
        gen, synced, members = self.redis.breaker.call(pipe.execute)
        marker = f"{self.users.fingerprint()}|{int(gen or 0)}"
        if not force and synced is not None and synced.decode() == marker:
            return 0
        states = self.users.states()
        known = {m.decode() for m in members}
        if force:
            known |= self._scan_state_ids(client)
        present = {str(user_id) for user_id, _version, _active in states}
        pairs: list[tuple[int | str, int]] = [(uid, user_state(v, a)) for uid, v, a in states]
        pairs += [(uid, DELETED) for uid in sorted(known - present)]
        self.redis.breaker.call(self._write_states, client, pairs, marker)
        return len(states)

    def _write_states(self, client: redis_lib.Redis, pairs: list[tuple[int | str, int]], marker: str) -> None:
        pipe = client.pipeline(transaction=False)
        self._store_states(pairs, pipe)
        pipe.set(self._users_synced_key, marker)
        pipe.execute()

    def _scan_state_ids(self, client: redis_lib.Redis) -> set[str]:
        """The ids of every state key in Redis (a full scan: only when resyncing, so that a
        state written before the set of ids existed is found too)."""
        prefix = self._key("ver", "")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        keys = self.redis.breaker.call(lambda: list(client.scan_iter(match=pattern, count=1000)))
        return {key.decode()[len(prefix) :] for key in keys}

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

    # -- API keys -----------------------------------------------------------------------------
    def api_key_keys(self, key_id: str, owner_id: int | None) -> list[str]:
        """The Redis keys deciding whether an API key is refused: its revocation mark, and its
        owner's state (keys act for their owner)."""
        if owner_id is None:
            return [self._key("deny", "key", key_id)]
        return [self._key("deny", "key", key_id), self._state_key(owner_id)]

    def deny_api_key(self, key_id: str) -> None:
        self._write(
            lambda c: c.set(self._key("deny", "key", key_id), "1", ex=API_KEY_MARK_TTL),
            "Redis unavailable: other workers see the API key revocation within the cache TTL",
        )
