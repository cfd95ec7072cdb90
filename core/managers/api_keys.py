"""ApiKeyManager: ``keel_<id>_<secret>`` API keys with scopes and expiry (SPEC §6).

- The secret is 32 random bytes (256 bits, base64url); the database stores only the id and
  ``HMAC-SHA256(API_KEY_PEPPER, id.secret)``, compared in constant time. The full key is
  shown once, at creation.
- A verified key's record is cached in-process for ``API_KEY_CACHE_TTL`` seconds (a lookup is
  not a database read per request; the secret is still checked on every request). Revoking
  invalidates the local cache and sets ``auth:deny:key:<id>`` in Redis, which the request
  guard reads with its other keys, so other workers see it at once.
- Last-used times are kept in memory and written at most every ``LAST_USED_FLUSH`` seconds
  per process (and at shutdown): no database write per request.
- Keys are accepted from the ``X-API-Key`` header only and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import redis as redis_lib
import sqlalchemy as sa
from flask import Flask

from core.errors import ConfigError, NotFound, ServiceUnavailable, Unauthorized, ValidationError
from core.managers.base import Manager
from core.managers.jwt import REDIS_DOWN

if TYPE_CHECKING:
    from core.app_manager import AppManager
    from core.auth.identity import Principal

logger = logging.getLogger(__name__)
audit = logging.getLogger("keel.audit")

KEY_RE = re.compile(r"^keel_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
SCOPE_RE = re.compile(r"^[a-z][a-z0-9_.:*-]{0,63}$")
NAME_MAX = 100
MAX_SCOPES = 32
LAST_USED_FLUSH = 60.0
CACHE_MAX = 10_000
REVOKED_MARK_TTL = 3600
_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DBAPIError)


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    name: str
    key_hash: str
    owner_id: int | None
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None
    owner_active: bool

    def public(self) -> dict[str, Any]:
        """What the API and CLI show (never the key or its hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": f"keel_{self.id}",
            "owner_id": self.owner_id,
            "scopes": list(self.scopes),
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def api_keys_table(metadata: sa.MetaData) -> sa.Table:
    if "api_keys" in metadata.tables:
        return metadata.tables["api_keys"]
    return sa.Table(
        "api_keys",
        metadata,
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(NAME_MAX), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.Integer, nullable=True, index=True),
        sa.Column("scopes", sa.String(2200), nullable=False, default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("last_used_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )


def check_scopes(scopes: Any) -> list[str]:
    if not isinstance(scopes, list) or len(scopes) > MAX_SCOPES:
        message = f"must be a list of at most {MAX_SCOPES} scopes"
        raise ValidationError(details=[{"param": "scopes", "message": message}])
    bad = [s for s in scopes if not isinstance(s, str) or not SCOPE_RE.match(s)]
    if bad:
        raise ValidationError(
            details=[{"param": "scopes", "message": "each scope: a lowercase letter, then [a-z0-9_.:*-], ≤ 64"}]
        )
    return sorted(set(scopes))


class ApiKeyManager(Manager):
    name: ClassVar[str] = "api_keys"

    def __init__(self) -> None:
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}
        self._last_flush = time.monotonic()

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am
        pepper = am.settings["API_KEY_PEPPER"]
        if not pepper or len(pepper.encode()) < 16:
            raise ConfigError(
                f"API_KEY_PEPPER from {am.settings.source('API_KEY_PEPPER')}: expected at least 16 bytes of secret"
            )
        self._pepper = pepper.encode()
        self.cache_ttl = float(am.settings["API_KEY_CACHE_TTL"])
        # Declared only: `am.db.create_all()` creates it at app_started / `flask db init`.
        self.table = api_keys_table(am.db.metadata)

    def _hash(self, key_id: str, secret: str) -> str:
        return hmac.new(self._pepper, f"{key_id}.{secret}".encode(), hashlib.sha256).hexdigest()

    def _rkey(self, key_id: str) -> str:
        return str(self.am.redis.key("auth", "deny", "key", key_id))

    @property
    def _redis(self) -> redis_lib.Redis | None:
        return getattr(getattr(self.am, "redis", None), "client", None)

    def _redis_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        breaker = getattr(self.am.redis, "breaker", None)
        if breaker is None:
            return fn(*args, **kwargs)
        return breaker.call(lambda: fn(*args, **kwargs))

    # -- records ------------------------------------------------------------------------------
    def _load(self, key_id: str) -> ApiKeyRecord | None:
        t = self.table
        users = self.am.db.metadata.tables.get("users")
        cols: list[Any] = [t]
        query: Any
        if users is not None:
            cols.append(users.c.active.label("owner_active"))
            query = sa.select(*cols).select_from(t.outerjoin(users, users.c.id == t.c.owner_id))
        else:
            query = sa.select(*cols)
        with self.am.db.engine.connect() as conn:
            row = conn.execute(query.where(t.c.id == key_id)).first()
        if row is None:
            return None
        owner_active = row.owner_id is None or bool(getattr(row, "owner_active", True))
        return ApiKeyRecord(
            id=row.id,
            name=row.name,
            key_hash=row.key_hash,
            owner_id=row.owner_id,
            scopes=tuple(s for s in row.scopes.split(" ") if s),
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
            owner_active=owner_active,
        )

    def _cached(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
            if hit is not None and now - hit[0] < self.cache_ttl:
                return hit[1]
        try:
            record = self._load(key_id)
        except _DB_ERRORS:
            logger.error("API key lookup failed: database unavailable")
            raise ServiceUnavailable() from None
        with self._lock:
            self._cache[key_id] = (now, record)
            self._cache.move_to_end(key_id)
            while len(self._cache) > CACHE_MAX:
                self._cache.popitem(last=False)
        return record

    def invalidate(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    # -- authentication -------------------------------------------------------------------------
    def authenticate(self, presented: Any) -> Principal:
        """The principal of a valid key, else :class:`Unauthorized` (one generic message)."""
        from core.auth.identity import Principal

        match = KEY_RE.match(presented) if isinstance(presented, str) else None
        if match is None:
            raise Unauthorized()
        key_id, secret = match.group(1), match.group(2)
        record = self._cached(key_id)
        expected = record.key_hash if record is not None else "0" * 64
        good = hmac.compare_digest(self._hash(key_id, secret), expected)
        now = time.time()
        if (
            record is None
            or not good
            or record.revoked_at is not None
            or (record.expires_at is not None and now >= record.expires_at)
            or not record.owner_active
        ):
            raise Unauthorized()
        self._touch(key_id, now)
        return Principal(
            kind="api_key",
            id=record.id,
            name=record.name,
            scopes=record.scopes,
            claims={"owner_id": record.owner_id},
        )

    def revocation_keys(self, principal: Principal) -> list[str]:
        return [self._rkey(principal.id)]

    def check_revocation(self, principal: Principal, values: list[Any] | None = None) -> None:
        """A key revoked by another worker within the cache TTL: the Redis mark says so."""
        if values is None:
            client = self._redis
            if client is None:
                return  # one process, or no shared store: the cache TTL bounds staleness
            try:
                values = [self._redis_call(client.get, self._rkey(principal.id))]
            except REDIS_DOWN:
                return  # the record itself is re-read from the database every cache TTL
        if values and values[0] is not None:
            self.invalidate(principal.id)
            raise Unauthorized()

    def _touch(self, key_id: str, now: float) -> None:
        with self._lock:
            self._last_used[key_id] = now
            due = time.monotonic() - self._last_flush >= LAST_USED_FLUSH
        if due:
            self.flush_last_used()

    def flush_last_used(self) -> None:
        """Write the batched last-used times (one statement per key, one transaction)."""
        with self._lock:
            pending, self._last_used = self._last_used, {}
            self._last_flush = time.monotonic()
        if not pending:
            return
        t = self.table
        try:
            with self.am.db.engine.begin() as conn:
                for key_id, ts in pending.items():
                    conn.execute(sa.update(t).where(t.c.id == key_id).values(last_used_at=ts))
        except _DB_ERRORS:
            logger.warning("could not write API key last-used times; will retry")
            with self._lock:
                for key_id, ts in pending.items():
                    self._last_used.setdefault(key_id, ts)

    # -- management -----------------------------------------------------------------------------
    def create(
        self, name: Any, scopes: Any, *, owner_id: int | None, expires_in_days: Any = None, actor: str | None = None
    ) -> dict[str, Any]:
        """Create a key; the result holds the full key (shown once) and the public record."""
        problems = []
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
            problems.append({"param": "name", "message": f"a non-empty string of at most {NAME_MAX} characters"})
        if expires_in_days is not None and (
            type(expires_in_days) is not int or not 1 <= expires_in_days <= 3650
        ):
            problems.append({"param": "expires_in_days", "message": "an integer from 1 to 3650"})
        if problems:
            raise ValidationError(details=problems)
        clean_scopes = check_scopes(scopes)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        expires_at = now + expires_in_days * 86400 if expires_in_days is not None else None
        try:
            with self.am.db.engine.begin() as conn:
                conn.execute(
                    sa.insert(self.table).values(
                        id=key_id,
                        name=name.strip(),
                        key_hash=self._hash(key_id, secret),
                        owner_id=owner_id,
                        scopes=" ".join(clean_scopes),
                        created_at=now,
                        expires_at=expires_at,
                    )
                )
        except _DB_ERRORS:
            logger.exception("cannot store a new API key")
            raise ServiceUnavailable() from None
        record = self._load(key_id)
        assert record is not None
        audit.info("api key created", extra={"api_key_id": key_id, "owner_id": owner_id, "actor": actor})
        self.am.hooks.trigger("api_key_created", api_key=record.public(), actor=actor)
        return {"key": f"keel_{key_id}_{secret}", "api_key": record.public()}

    def list(self, owner_id: int | None = None, *, all_owners: bool = False) -> list[dict[str, Any]]:
        t = self.table
        query = sa.select(t.c.id).order_by(t.c.created_at)
        if not all_owners:
            query = query.where(t.c.owner_id == owner_id)
        with self.am.db.engine.connect() as conn:
            ids = conn.execute(query).scalars().all()
        records = [self._load(i) for i in ids]
        return [r.public() for r in records if r is not None]

    def get(self, key_id: str) -> ApiKeyRecord | None:
        if not isinstance(key_id, str) or not re.fullmatch(r"[0-9a-f]{16}", key_id):
            return None
        return self._load(key_id)

    def revoke(
        self, key_id: str, *, owner_id: int | None = None, admin: bool = False, actor: str | None = None
    ) -> None:
        """Revoke a key. A non-admin may only revoke their own (others look like NotFound)."""
        record = self.get(key_id)
        if record is None or (not admin and record.owner_id != owner_id):
            raise NotFound("No such API key.")
        if record.revoked_at is None:
            t = self.table
            try:
                with self.am.db.engine.begin() as conn:
                    conn.execute(sa.update(t).where(t.c.id == key_id).values(revoked_at=time.time()))
            except _DB_ERRORS:
                logger.exception("cannot revoke an API key")
                raise ServiceUnavailable() from None
        self.invalidate(key_id)
        client = self._redis
        if client is not None:
            try:
                self._redis_call(client.set, self._rkey(key_id), "1", ex=REVOKED_MARK_TTL)
            except REDIS_DOWN:
                logger.warning("Redis unavailable: other workers see the API key revocation within the cache TTL")
        audit.info("api key revoked", extra={"api_key_id": key_id, "actor": actor})
        self.am.hooks.trigger("api_key_revoked", api_key_id=key_id, owner_id=record.owner_id, actor=actor)

    def dispose(self) -> None:
        try:
            self.flush_last_used()
        except Exception:
            # Shutdown must go on; losing a few last-used times is harmless.
            logger.exception("flushing API key last-used times at shutdown failed")
