"""The API key store (SPEC §6): ``keel_<id>_<secret>`` keys with scopes, owner and expiry.

- The secret is 32 random bytes (256 bits, base64url); the database stores only the id and
  ``HMAC-SHA256(API_KEY_PEPPER, id.secret)``, compared in constant time. The full key is
  returned once, at creation.
- A key's record is cached in-process for ``API_KEY_CACHE_TTL`` seconds (a lookup is not a
  database read per request; the secret is still checked on every request).
- A key acts for its owner: a key whose owner is disabled or deleted is refused, and the
  principal of a key carries its owner's roles (:mod:`core.auth.policy` checks an endpoint's
  roles against them). The record carries the owner's roles, active flag and token version;
  with Redis, the owner's state (``auth:ver:<owner id>``,
  read with the key's revocation mark) refuses the key at once when the owner is disabled or
  deleted and reloads the record when the owner changed (:meth:`ApiKeyStore.reload`; the
  request is then authorized with the fresh record's principal);
  without Redis, this process's own changes of a user drop that owner's cached records
  (:meth:`ApiKeyStore.forget_owner`) and another process's are seen within the cache TTL.
- A user holds at most ``API_KEYS_PER_USER`` live keys (not revoked, not expired): the
  count and the insert are one transaction, serialised per owner (the owner's row is locked
  on PostgreSQL and Oracle; SQLite serialises writers).
- Last-used times are kept in memory and written at most every ``LAST_USED_FLUSH`` seconds
  per process, by the request that finds them due (and at shutdown): no database write per
  request and no thread.
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
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core.auth.identity import Principal
from core.auth.users import users_table
from core.errors import Conflict, ServiceUnavailable, Unauthorized, ValidationError

if TYPE_CHECKING:
    from core.managers.database import DatabaseManager

logger = logging.getLogger(__name__)

KEY_RE = re.compile(r"^keel_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
SCOPE_RE = re.compile(r"^[a-z][a-z0-9_.:*-]{0,63}$")
NAME_MAX = 100
MAX_SCOPES = 32
LAST_USED_FLUSH = 60.0
CACHE_MAX = 10_000


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
    owner_version: int | None  # the owner's token version; None without an owner or once it is deleted
    owner_roles: tuple[str, ...] = ()  # the owner's roles when the record was read

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

    def usable(self, now: float) -> bool:
        """Not revoked, not expired, and its owner (if any) is active."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at) and self.owner_active

    def principal(self) -> Principal:
        """The caller this key is: its scopes, acting for its owner with the owner's roles."""
        return Principal(
            kind="api_key",
            id=self.id,
            name=self.name,
            roles=self.owner_roles,
            scopes=self.scopes,
            claims={"owner_ver": self.owner_version},
            owner_id=self.owner_id,
        )


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


def _check_known(scopes: list[str], known: frozenset[str]) -> None:
    unknown = [s for s in scopes if s not in known]
    if unknown:
        offered = ", ".join(sorted(known)) or "none"
        message = f"unknown scope(s): {', '.join(unknown)}; the scopes endpoints declare: {offered}"
        raise ValidationError(details=[{"param": "scopes", "message": message}])


def _check_new_key(name: Any, expires_in_days: Any) -> None:
    problems = []
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        problems.append({"param": "name", "message": f"a non-empty string of at most {NAME_MAX} characters"})
    if expires_in_days is not None and (type(expires_in_days) is not int or not 1 <= expires_in_days <= 3650):
        problems.append({"param": "expires_in_days", "message": "an integer from 1 to 3650"})
    if problems:
        raise ValidationError(details=problems)


class ApiKeyStore:
    """The ``api_keys`` rows: hashing, a record cache, batched last-used times."""

    def __init__(self, db: DatabaseManager, pepper: bytes, cache_ttl: float) -> None:
        self.db = db
        self.table = api_keys_table(db.metadata)  # declared only; `db.create_all()` creates it
        self._users = users_table(db.metadata)
        self._pepper = pepper
        self.cache_ttl = cache_ttl
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}
        self._last_flush = time.monotonic()

    def _hash(self, key_id: str, secret: str) -> str:
        return hmac.new(self._pepper, f"{key_id}.{secret}".encode(), hashlib.sha256).hexdigest()

    # -- records ------------------------------------------------------------------------------
    def _load(self, key_id: str) -> ApiKeyRecord | None:
        t, users = self.table, self._users
        query = (
            sa.select(
                t,
                users.c.active.label("owner_active"),
                users.c.token_version.label("owner_version"),
                users.c.roles.label("owner_roles"),
            )
            .select_from(t.outerjoin(users, users.c.id == t.c.owner_id))
            .where(t.c.id == key_id)
        )
        row = self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
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
            owner_active=row.owner_id is None or bool(row.owner_active),
            owner_version=None if row.owner_version is None else int(row.owner_version),
            owner_roles=tuple(r for r in (row.owner_roles or "").split(",") if r),
        )

    def _cached(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
            if hit is not None and now - hit[0] < self.cache_ttl:
                return hit[1]
        record = self._load(key_id)
        with self._lock:
            self._cache[key_id] = (now, record)
            self._cache.move_to_end(key_id)
            while len(self._cache) > CACHE_MAX:
                self._cache.popitem(last=False)
        return record

    def invalidate(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    def forget_owner(self, owner_id: int) -> None:
        """Drop the cached records of ``owner_id``'s keys (the owner changed in this process)."""
        with self._lock:
            for key_id in [k for k, (_t, r) in self._cache.items() if r is not None and r.owner_id == owner_id]:
                del self._cache[key_id]

    def reload(self, key_id: str) -> ApiKeyRecord | None:
        """The key's record read again from the database (and cached)."""
        self.invalidate(key_id)
        return self._cached(key_id)

    def get(self, key_id: Any) -> ApiKeyRecord | None:
        if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
            return None
        return self._load(key_id)

    def list(self, owner_id: int | None = None, *, all_owners: bool = False) -> list[ApiKeyRecord]:
        t = self.table
        query = sa.select(t.c.id).order_by(t.c.created_at)
        if not all_owners:
            query = query.where(t.c.owner_id == owner_id)
        ids = self.db.read(lambda conn: conn.execute(query).scalars().all())
        return [r for r in (self._load(i) for i in ids) if r is not None]

    # -- authentication -------------------------------------------------------------------------
    def authenticate(self, presented: Any) -> Principal:
        """The principal of a valid key, else :class:`Unauthorized` (one generic message)."""
        match = KEY_RE.match(presented) if isinstance(presented, str) else None
        if match is None:
            raise Unauthorized()
        key_id, secret = match.group(1), match.group(2)
        record = self._cached(key_id)
        expected = record.key_hash if record is not None else "0" * 64
        good = hmac.compare_digest(self._hash(key_id, secret), expected)
        now = time.time()
        if record is None or not good or not record.usable(now):
            raise Unauthorized()
        self._touch(key_id, now)
        return record.principal()

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
            with self.db.transaction() as conn:
                for key_id, ts in pending.items():
                    conn.execute(sa.update(t).where(t.c.id == key_id).values(last_used_at=ts))
        except ServiceUnavailable:
            logger.warning("could not write API key last-used times; will retry")
            with self._lock:
                for key_id, ts in pending.items():
                    self._last_used.setdefault(key_id, ts)

    # -- writes ---------------------------------------------------------------------------------
    def create(
        self,
        name: Any,
        scopes: Any,
        *,
        owner_id: int | None,
        expires_in_days: Any = None,
        known_scopes: frozenset[str] | None = None,
        max_live: int | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        """Store a new key: ``(the full key, shown once; its record)``.

        ``known_scopes``: the scopes a key may hold (those some endpoint declares), else 400.
        ``max_live``: the owner's live keys (not revoked, not expired) after this one may not
        exceed it, else :class:`Conflict` (409)."""
        _check_new_key(name, expires_in_days)
        clean_scopes = check_scopes(scopes)
        if known_scopes is not None:
            _check_known(clean_scopes, known_scopes)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with self.db.transaction() as conn:
            if owner_id is not None and max_live is not None:
                # The owner's row lock serialises their concurrent creations (FOR UPDATE is a
                # no-op on SQLite, where the insert below takes the database's write lock).
                users = self._users
                conn.execute(sa.select(users.c.id).where(users.c.id == owner_id).with_for_update())
            conn.execute(
                sa.insert(self.table).values(
                    id=key_id,
                    name=name.strip(),
                    key_hash=self._hash(key_id, secret),
                    owner_id=owner_id,
                    scopes=" ".join(clean_scopes),
                    created_at=now,
                    expires_at=now + expires_in_days * 86400 if expires_in_days is not None else None,
                )
            )
            if owner_id is not None and max_live is not None and self._live_count(conn, owner_id, now) > max_live:
                raise Conflict(
                    f"This user already has {max_live} live API keys, the most allowed (API_KEYS_PER_USER); "
                    "revoke one (DELETE /auth/api-keys/<id>) before creating another."
                )
        record = self._load(key_id)
        assert record is not None
        return f"keel_{key_id}_{secret}", record

    def _live_count(self, conn: sa.Connection, owner_id: int, now: float) -> int:
        """How many of ``owner_id``'s keys are live (not revoked, not expired)."""
        t = self.table
        query = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(
                t.c.owner_id == owner_id,
                t.c.revoked_at.is_(None),
                sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now),
            )
        )
        return int(conn.execute(query).scalar_one())

    def revoke_owned(self, owner_id: int) -> tuple[str, ...]:
        """Revoke and disown every key recorded for ``owner_id``; the ids of those that were
        live. Called when a user is created: a key already recorded for a new user's id
        belonged to a deleted user whose id was reused (a SQLite table created before ids were
        made unique forever) and must neither act for nor be listed to the new user."""
        t = self.table
        query = sa.select(t.c.id, t.c.revoked_at).where(t.c.owner_id == owner_id)
        rows = self.db.read(lambda conn: conn.execute(query).all())
        if not rows:
            return ()
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(sa.update(t).where(t.c.owner_id == owner_id, t.c.revoked_at.is_(None)).values(revoked_at=now))
            conn.execute(sa.update(t).where(t.c.owner_id == owner_id).values(owner_id=None))
        for row in rows:
            self.invalidate(row.id)
        return tuple(row.id for row in rows if row.revoked_at is None)

    def revoke(self, key_id: str) -> None:
        """Mark the key revoked in the database and drop it from this process's cache."""
        t = self.table
        with self.db.transaction() as conn:
            conn.execute(sa.update(t).where(t.c.id == key_id, t.c.revoked_at.is_(None)).values(revoked_at=time.time()))
        self.invalidate(key_id)
