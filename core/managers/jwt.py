"""JWTManager: access/refresh tokens, rotation with reuse detection, revocation (SPEC §6).

- Tokens are PyJWT with the algorithm pinned by ``JWT_ALGORITHM``. HS256 signs with
  ``JWT_SECRET_KEY`` (≥ 32 bytes); any algorithm may use a JWK set in ``JWT_KEYS`` (JSON or a
  file path) whose keys carry a ``kid``; a key with ``"retired_at": <unix time>`` still
  verifies for ``JWT_KEY_GRACE`` seconds, then its tokens are rejected.
- :meth:`JWTManager.decode` is strictly local (no Redis, no database): size ≤ 8 KiB, three
  base64url segments, a header holding only ``alg``/``typ``/``kid`` (so ``jku``, ``x5u``,
  ``jwk``, ``crit``... are rejected), the pinned ``alg``, a known, unexpired ``kid``, the
  signature, every claim present with its type, ``iss``/``aud`` equal, ``exp``/``nbf``/``iat``
  with ≤ 30 s leeway, lifetime ≤ ``JWT_MAX_TTL``, and the expected ``type``.
- Revocation: a ``jti`` or refresh family (``fam``) is denied in the ``auth_revocations``
  table (the source of truth) and in Redis (``auth:deny:jti:<jti>`` / ``auth:deny:fam:<fam>``,
  TTL = remaining lifetime); every token of a user is revoked by bumping the user's token
  version (``auth:ver:<user id>``). :meth:`revocation_keys` names the Redis keys whose values
  decide; the rate limiter reads them in its single round trip and hands the values to
  :meth:`check_revocation`. Redis down → the database answers; both down → 503. A key
  ``auth:synced`` says Redis holds the database's deny-list; when it is missing (Redis
  restarted empty) the database answers and Redis is filled again.
- Refresh rotation: one row per family in ``auth_refresh_families`` holds the family's
  current refresh ``jti``; a refresh is a compare-and-set on it, so of N concurrent refreshes
  with one token exactly one wins; presenting a spent token revokes the whole family.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import jwt
import redis as redis_lib
import sqlalchemy as sa
from flask import Flask

from core.errors import ConfigError, NotFound, ServiceUnavailable, Unauthorized
from core.managers.base import Manager
from core.users import UserStore

if TYPE_CHECKING:
    from core.app_manager import AppManager
    from core.auth.identity import Principal

logger = logging.getLogger(__name__)
audit = logging.getLogger("keel.audit")

MAX_TOKEN_BYTES = 8 * 1024
VERIFIED_CACHE_SIZE = 4096
# Without Redis the database is asked; its "not revoked" answer is reused this long, so that a
# revocation made by another process is seen within 1 s (SPEC §6) without a query per request.
DB_CHECK_CACHE_TTL = 0.5
MAX_LEEWAY = 30
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{2,2048}\.[A-Za-z0-9_-]{2,8192}\.[A-Za-z0-9_-]{0,8192}$")
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
_TYPES = ("access", "refresh")
_REQUIRED = ("sub", "jti", "iat", "nbf", "exp", "type", "iss", "aud", "ver", "fam")
_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DBAPIError)
# Redis not answering: its own errors, socket errors, or the breaker's fail-fast (a 503 error).
REDIS_DOWN = (redis_lib.RedisError, OSError, ServiceUnavailable)


def _is_int(value: Any) -> bool:
    return type(value) is int


@dataclass(frozen=True)
class VerifyKey:
    kid: str
    key: Any
    not_after: float | None  # retired_at + grace; None = current


class KeySet:
    """The signing key and every key that may still verify, by ``kid``."""

    def __init__(self, algorithm: str, signing_kid: str, signing_key: Any, verify: dict[str, VerifyKey]) -> None:
        self.algorithm = algorithm
        self.signing_kid = signing_kid
        self.signing_key = signing_key
        self.verify = verify

    @classmethod
    def from_settings(cls, settings: Any) -> KeySet:
        algorithm = settings["JWT_ALGORITHM"]
        raw = settings["JWT_KEYS"]
        if raw:
            return cls._from_jwks(algorithm, raw, settings["JWT_KEY_ID"], settings["JWT_KEY_GRACE"])
        if algorithm == "HS256":
            secret = settings["JWT_SECRET_KEY"]
            if not secret or len(secret.encode()) < 32:
                raise ConfigError(
                    f"JWT_SECRET_KEY from {settings.source('JWT_SECRET_KEY')}: HS256 needs a key of at least "
                    "32 bytes (generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            kid = "hs-" + hashlib.sha256(b"keel-kid:" + secret.encode()).hexdigest()[:12]
            key = secret.encode()
            return cls(algorithm, kid, key, {kid: VerifyKey(kid, key, None)})
        if settings["APP_ENV"] in ("development", "test"):
            logger.warning("JWT_ALGORITHM=%s without JWT_KEYS: using an ephemeral key (development only)", algorithm)
            private = _generate_private_key(algorithm)
            kid = "dev-" + uuid.uuid4().hex[:12]
            return cls(algorithm, kid, private, {kid: VerifyKey(kid, private.public_key(), None)})
        raise ConfigError(f"JWT_ALGORITHM={algorithm} needs JWT_KEYS: a JWK set with a private signing key and a kid")

    @classmethod
    def _from_jwks(cls, algorithm: str, raw: str, wanted_kid: str | None, grace: int) -> KeySet:
        text = raw.strip()
        if not text.startswith("{"):
            try:
                text = Path(text).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"JWT_KEYS: cannot read key set file: {exc.strerror}") from None
        try:
            data = json.loads(text)
            keys = data["keys"]
            assert isinstance(keys, list) and keys
        except (ValueError, KeyError, TypeError, AssertionError):
            raise ConfigError('JWT_KEYS: expected a JWK set {"keys": [{...,"kid": "..."}]}') from None
        verify: dict[str, VerifyKey] = {}
        signing: tuple[str, Any] | None = None
        for index, jwk_data in enumerate(keys):
            kid = jwk_data.get("kid") if isinstance(jwk_data, dict) else None
            if not isinstance(kid, str) or not _KID_RE.match(kid):
                raise ConfigError(f"JWT_KEYS: key #{index} needs a 'kid' of 1-64 characters [A-Za-z0-9_-]")
            try:
                parsed = jwt.PyJWK(jwk_data, algorithm=algorithm)
            except jwt.PyJWTError as exc:
                raise ConfigError(f"JWT_KEYS: key {kid!r} is not a valid {algorithm} JWK: {exc}") from None
            key = parsed.key
            retired = jwk_data.get("retired_at")
            if retired is not None and not isinstance(retired, int | float):
                raise ConfigError(f"JWT_KEYS: key {kid!r}: retired_at must be a unix time")
            private = algorithm == "HS256" or "d" in jwk_data
            public = key.public_key() if private and algorithm != "HS256" else key
            verify[kid] = VerifyKey(kid, public, None if retired is None else float(retired) + grace)
            if private and retired is None and signing is None and (wanted_kid is None or wanted_kid == kid):
                signing = (kid, key)
        if signing is None:
            which = f"kid {wanted_kid!r}" if wanted_kid else "a private key"
            raise ConfigError(f"JWT_KEYS: no current (not retired) signing key: expected {which} in the set")
        if algorithm == "HS256" and len(signing[1]) < 32:
            raise ConfigError("JWT_KEYS: the HS256 signing key is shorter than 32 bytes")
        return cls(algorithm, signing[0], signing[1], verify)


def _generate_private_key(algorithm: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def revocation_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Declare (once per metadata) ``auth_revocations`` and ``auth_refresh_families``.

    Times are Unix epoch seconds (``Float``: a double everywhere, ``FLOAT(126)`` on Oracle).
    """
    if "auth_revocations" in metadata.tables:
        return metadata.tables["auth_revocations"], metadata.tables["auth_refresh_families"]
    revocations = sa.Table(
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
    families = sa.Table(
        "auth_refresh_families",
        metadata,
        sa.Column("fam", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False, index=True),
        sa.Column("current_jti", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("rotated_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    return revocations, families


class JWTManager(Manager):
    name: ClassVar[str] = "jwt"

    def __init__(self) -> None:
        self.keys: KeySet | None = None
        self.users: UserStore | None = None
        self._resync_needed = True
        self._resync_lock = threading.Lock()
        self._verified: dict[str, tuple[dict[str, Any], float | None]] = {}
        self._db_checked: dict[str, float] = {}

    # -- setup --------------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        s = am.settings
        self.am = am
        if s["JWT_LEEWAY"] > MAX_LEEWAY:
            raise ConfigError(f"JWT_LEEWAY from {s.source('JWT_LEEWAY')}: expected at most {MAX_LEEWAY} seconds")
        for key in ("JWT_ACCESS_TTL", "JWT_REFRESH_TTL"):
            if s[key] > s["JWT_MAX_TTL"]:
                raise ConfigError(f"{key} from {s.source(key)}: expected at most JWT_MAX_TTL ({s['JWT_MAX_TTL']})")
        self.keys = KeySet.from_settings(s)
        self.algorithm = s["JWT_ALGORITHM"]
        self.issuer = s["JWT_ISSUER"]
        self.audience = s["JWT_AUDIENCE"]
        self.leeway = int(s["JWT_LEEWAY"])
        self.access_ttl = int(s["JWT_ACCESS_TTL"])
        self.refresh_ttl = int(s["JWT_REFRESH_TTL"])
        self.max_ttl = int(s["JWT_MAX_TTL"])
        self.users = UserStore(am.db.engine, am.db.metadata, s["APP_ENV"])
        # Declared only: `am.db.create_all()` creates them at app_started / `flask db init`.
        self.revocations, self.families = revocation_tables(am.db.metadata)
        if "users" not in am.services:
            am.services.register("users", self.users)

    @property
    def _redis(self) -> redis_lib.Redis | None:
        client = getattr(self.am, "redis", None)
        return getattr(client, "client", None)

    def _redis_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call Redis through its circuit breaker (fails fast while Redis is known down)."""
        breaker = getattr(self.am.redis, "breaker", None)
        if breaker is None:
            return fn(*args, **kwargs)
        return breaker.call(lambda: fn(*args, **kwargs))

    def _rkey(self, *parts: str) -> str:
        return str(self.am.redis.key("auth", *parts))

    def health(self) -> dict[str, Any]:
        assert self.keys is not None
        return {"status": "healthy", "algorithm": self.algorithm, "kid": self.keys.signing_kid}

    # -- issuing ------------------------------------------------------------------------------
    def _encode(self, claims: dict[str, Any]) -> str:
        assert self.keys is not None
        return jwt.encode(
            claims,
            self.keys.signing_key,
            algorithm=self.algorithm,
            headers={"kid": self.keys.signing_kid, "typ": "JWT"},
        )

    def _claims(self, user: Any, kind: str, ttl: int, fam: str, jti: str, now: int) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "sub": str(user.id),
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "type": kind,
            "iss": self.issuer,
            "aud": self.audience,
            "ver": user.token_version,
            "fam": fam,
        }
        if kind == "access":
            claims["name"] = user.username
            claims["roles"] = list(user.roles)
        return claims

    def _pair(self, user: Any, fam: str, refresh_jti: str) -> dict[str, Any]:
        now = int(time.time())
        access = self._encode(self._claims(user, "access", self.access_ttl, fam, uuid.uuid4().hex, now))
        refresh = self._encode(self._claims(user, "refresh", self.refresh_ttl, fam, refresh_jti, now))
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
        }

    def issue_pair(self, user: Any) -> dict[str, Any]:
        """A new access/refresh pair starting a new refresh family (login)."""
        fam, jti = uuid.uuid4().hex, uuid.uuid4().hex
        now = time.time()
        try:
            with self.am.db.engine.begin() as conn:
                conn.execute(
                    sa.insert(self.families).values(
                        fam=fam, user_id=user.id, current_jti=jti, created_at=now, rotated_at=now, revoked_at=None
                    )
                )
        except _DB_ERRORS:
            logger.exception("cannot record a refresh family")
            raise ServiceUnavailable() from None
        return self._pair(user, fam, jti)

    def refresh(self, token: Any) -> dict[str, Any]:
        """Rotate: spend ``token`` and return a new pair of the same family.

        A spent (or unknown) refresh token of a live family is a reuse: the family is revoked.
        """
        claims = self.decode(token, "refresh")
        assert self.users is not None
        user_id, fam, jti = int(claims["sub"]), claims["fam"], claims["jti"]
        try:
            user = self.users.get(user_id)
            if user is None or not user.active or user.token_version != claims["ver"]:
                raise Unauthorized()
            new_jti = uuid.uuid4().hex
            f = self.families
            with self.am.db.engine.begin() as conn:
                won = conn.execute(
                    sa.update(f)
                    .where(f.c.fam == fam, f.c.current_jti == jti, f.c.revoked_at.is_(None), f.c.user_id == user_id)
                    .values(current_jti=new_jti, rotated_at=time.time())
                ).rowcount
        except _DB_ERRORS:
            logger.exception("refresh: database unavailable")
            raise ServiceUnavailable() from None
        if won != 1:
            if self._family_live(fam):
                audit.warning("refresh token reuse: family revoked", extra={"user_id": user_id, "family": fam})
                self.revoke_family(fam, user_id=user_id, reason="refresh_reuse")
            raise Unauthorized()
        return self._pair(user, fam, new_jti)

    def _family_live(self, fam: str) -> bool:
        f = self.families
        with self.am.db.engine.connect() as conn:
            row = conn.execute(sa.select(f.c.revoked_at).where(f.c.fam == fam)).first()
        return row is not None and row.revoked_at is None

    # -- verification (local only) --------------------------------------------------------------
    def decode(self, token: Any, expected_type: str) -> dict[str, Any]:
        """Verified claims of ``token`` or :class:`Unauthorized` (one generic message).

        A token that verified before is found in a small in-process cache keyed by its exact
        text (the signature and the claims' shapes cannot change); its time claims, type and
        key retirement are checked again on every use. Revocation is never cached here.
        """
        if isinstance(token, str):
            hit = self._verified.get(token)
            if hit is not None:
                claims, not_after = hit
                now = time.time()
                if (
                    claims["type"] == expected_type
                    and claims["exp"] > now - self.leeway
                    and claims["nbf"] <= now + self.leeway
                    and claims["iat"] <= now + self.leeway
                    and (not_after is None or now <= not_after)
                ):
                    return dict(claims)
                raise Unauthorized()
        try:
            claims, not_after = self._decode(token, expected_type)
        except Unauthorized:
            raise
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, RecursionError, OverflowError, AttributeError):
            raise Unauthorized() from None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # crude but lock-free; refilled by the next requests
        self._verified[token] = (claims, not_after)
        return dict(claims)

    def _decode(self, token: Any, expected_type: str) -> tuple[dict[str, Any], float | None]:
        assert self.keys is not None
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or not _TOKEN_RE.match(token):
            raise Unauthorized()
        header = jwt.get_unverified_header(token)
        if not isinstance(header, dict) or not set(header) <= _ALLOWED_HEADER:
            raise Unauthorized()
        if header.get("alg") != self.algorithm or header.get("typ", "JWT") != "JWT":
            raise Unauthorized()
        kid = header.get("kid")
        if not isinstance(kid, str) or not _KID_RE.match(kid):
            raise Unauthorized()
        vk = self.keys.verify.get(kid)
        now = time.time()
        if vk is None or (vk.not_after is not None and now > vk.not_after):
            raise Unauthorized()
        claims = jwt.decode(
            token,
            vk.key,
            algorithms=[self.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options={"require": list(_REQUIRED), "strict_aud": True},
        )
        exp, iat, nbf = claims["exp"], claims["iat"], claims["nbf"]
        if not (_is_int(exp) and _is_int(iat) and _is_int(nbf) and _is_int(claims["ver"])):
            raise Unauthorized()
        if not (0 < exp - iat <= self.max_ttl) or nbf > exp or claims["ver"] < 0:
            raise Unauthorized()
        if claims["iss"] != self.issuer or claims["aud"] != self.audience:
            raise Unauthorized()
        if claims["type"] not in _TYPES or claims["type"] != expected_type:
            raise Unauthorized()
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit() or len(sub) > 18:
            raise Unauthorized()
        if not (isinstance(claims["jti"], str) and _HEX32.match(claims["jti"])):
            raise Unauthorized()
        if not (isinstance(claims["fam"], str) and _HEX32.match(claims["fam"])):
            raise Unauthorized()
        if expected_type == "access":
            roles = claims.get("roles")
            if not isinstance(claims.get("name"), str) or not isinstance(roles, list):
                raise Unauthorized()
            if not all(isinstance(r, str) for r in roles):
                raise Unauthorized()
        return dict(claims), vk.not_after

    # -- revocation: checks ----------------------------------------------------------------------
    def revocation_keys(self, principal: Principal) -> list[str]:
        """The Redis keys whose values decide whether ``principal``'s token is revoked, in the
        order :meth:`check_revocation` expects their values."""
        c = principal.claims
        return [
            self._rkey("deny", "jti", c["jti"]),
            self._rkey("deny", "fam", c["fam"]),
            self._rkey("ver", c["sub"]),
            self._rkey("synced"),
        ]

    def check_revocation(self, principal: Principal, values: list[Any] | None = None) -> None:
        """Raise :class:`Unauthorized` if the token is revoked; ``values`` were read for
        :meth:`revocation_keys` by the caller (``None``: read them here)."""
        if values is None:
            values = self._read_redis(self.revocation_keys(principal))
        if values is None or values[3] is None or self._resync_needed:
            # Redis is down, has no copy of the deny-list (restarted empty) or missed writes
            # while it was down: the database decides, and Redis is filled again.
            self._check_db(principal.claims)
            if values is not None:
                self.resync_redis()
            return
        jti_denied, fam_denied, version = values[0], values[1], values[2]
        if jti_denied is not None or fam_denied is not None:
            raise Unauthorized()
        current = int(version) if version is not None else 0
        if principal.claims["ver"] != current:
            raise Unauthorized()

    def _read_redis(self, keys: list[str]) -> list[Any] | None:
        client = self._redis
        if client is None:
            return None
        try:
            return list(self._redis_call(client.mget, keys))
        except REDIS_DOWN:
            self._resync_needed = True
            logger.warning("Redis unavailable for the token deny-list; the database answers")
            return None

    def _check_db(self, claims: dict[str, Any]) -> None:
        """The database's answer (one query). A "not revoked" answer is remembered for
        ``DB_CHECK_CACHE_TTL`` seconds; this process's own revocations clear it at once."""
        assert self.users is not None
        jti = claims["jti"]
        deadline = self._db_checked.get(jti)
        if deadline is not None and time.monotonic() < deadline:
            return
        r, u = self.revocations, self.users.table
        now = time.time()
        denied = (
            sa.select(sa.func.count())
            .select_from(r)
            .where(
                sa.or_(
                    sa.and_(r.c.kind == "jti", r.c.value == jti),
                    sa.and_(r.c.kind == "fam", r.c.value == claims["fam"]),
                ),
                r.c.expires_at > now,
            )
            .scalar_subquery()
        )
        try:
            with self.am.db.engine.connect() as conn:
                row = conn.execute(
                    sa.select(u.c.token_version, u.c.active, denied.label("denied")).where(u.c.id == int(claims["sub"]))
                ).first()
        except _DB_ERRORS:
            logger.error("token revocation cannot be checked: Redis and the database are unavailable")
            raise ServiceUnavailable() from None
        if row is None or row.denied or not row.active or int(row.token_version) != claims["ver"]:
            raise Unauthorized()
        if len(self._db_checked) >= VERIFIED_CACHE_SIZE:
            self._db_checked.clear()
        self._db_checked[jti] = time.monotonic() + DB_CHECK_CACHE_TTL

    def resync_redis(self) -> None:
        """Copy the database's live deny-list and token versions into Redis, then mark it synced."""
        client = self._redis
        if client is None or not self._resync_lock.acquire(blocking=False):
            return
        try:
            assert self.users is not None
            now = time.time()
            r = self.revocations
            with self.am.db.engine.connect() as conn:
                rows = conn.execute(sa.select(r.c.kind, r.c.value, r.c.expires_at).where(r.c.expires_at > now)).all()
            versions = self.users.versions()
            pipe = client.pipeline(transaction=False)
            for row in rows:
                pipe.set(self._rkey("deny", row.kind, row.value), "1", ex=max(1, int(row.expires_at - now) + 1))
            for user_id, version in versions.items():
                pipe.set(self._rkey("ver", str(user_id)), version)
            pipe.set(self._rkey("synced"), str(int(now)))
            self._redis_call(pipe.execute)
            self._resync_needed = False
            logger.info("token deny-list copied to Redis (%d entries, %d versions)", len(rows), len(versions))
        except (*REDIS_DOWN, *_DB_ERRORS):
            logger.warning("token deny-list resync to Redis failed; will retry")
        finally:
            self._resync_lock.release()

    # -- revocation: writes ----------------------------------------------------------------------
    def _deny(self, kind: str, value: str, user_id: int | None, expires_at: float) -> None:
        self._db_checked.clear()
        now = time.time()
        try:
            with self.am.db.engine.begin() as conn:
                conn.execute(sa.delete(self.revocations).where(self.revocations.c.expires_at < now - 60))
            with self.am.db.engine.begin() as conn:
                conn.execute(
                    sa.insert(self.revocations).values(
                        kind=kind, value=value, user_id=user_id, expires_at=expires_at, created_at=now
                    )
                )
        except sa.exc.IntegrityError:
            pass  # already revoked
        except _DB_ERRORS:
            logger.exception("cannot record a revocation in the database")
            raise ServiceUnavailable() from None
        self._redis_write(lambda c: c.set(self._rkey("deny", kind, value), "1", ex=max(1, int(expires_at - now) + 1)))

    def _redis_write(self, op: Any) -> None:
        client = self._redis
        if client is None:
            return
        try:
            self._redis_call(op, client)
        except REDIS_DOWN:
            # The database holds it (source of truth); Redis gets it at the next resync.
            self._resync_needed = True
            logger.warning("Redis unavailable: revocation stored in the database only until it is back")

    def revoke_token(self, claims: dict[str, Any], reason: str = "logout") -> None:
        """Deny one token (by ``jti``) for the rest of its lifetime."""
        self._deny("jti", claims["jti"], int(claims["sub"]), float(claims["exp"]) + self.leeway)
        audit.info("token revoked", extra={"user_id": int(claims["sub"]), "reason": reason})

    def revoke_family(self, fam: str, *, user_id: int, reason: str, actor: str | None = None) -> None:
        """Deny every token of a refresh family (logout, refresh-token reuse)."""
        f = self.families
        now = time.time()
        try:
            with self.am.db.engine.begin() as conn:
                conn.execute(sa.update(f).where(f.c.fam == fam, f.c.revoked_at.is_(None)).values(revoked_at=now))
        except _DB_ERRORS:
            logger.exception("cannot revoke a refresh family in the database")
            raise ServiceUnavailable() from None
        self._deny("fam", fam, user_id, now + max(self.refresh_ttl, self.access_ttl) + self.leeway)
        audit.info("token family revoked", extra={"user_id": user_id, "reason": reason, "actor": actor})
        self.am.hooks.trigger("tokens_revoked", user_id=user_id, family=fam, reason=reason, actor=actor)

    def logout(self, claims: dict[str, Any]) -> None:
        """Revoke this access token and its refresh family."""
        self.revoke_token(claims, reason="logout")
        self.revoke_family(claims["fam"], user_id=int(claims["sub"]), reason="logout", actor=f"user:{claims['sub']}")

    def revoke_user_tokens(self, user_id: Any, actor: str | None = None, reason: str = "admin") -> dict[str, Any]:
        """Revoke every token of a user (token version bump)."""
        try:
            uid = int(user_id)
        except (TypeError, ValueError):
            raise NotFound(f"no user {user_id!r}") from None
        return self._bump(uid, actor=actor, reason=reason)

    def _bump(self, user_id: int, *, actor: str | None, reason: str, **changes: Any) -> dict[str, Any]:
        assert self.users is not None
        try:
            version = self.users.bump_version(user_id, **changes)
        except _DB_ERRORS:
            logger.exception("cannot bump a token version")
            raise ServiceUnavailable() from None
        self._db_checked.clear()
        self._redis_write(lambda c: c.set(self._rkey("ver", str(user_id)), version))
        audit.info("all tokens of a user revoked", extra={"user_id": user_id, "reason": reason, "actor": actor})
        self.am.hooks.trigger("tokens_revoked", user_id=user_id, family=None, reason=reason, actor=actor)
        return {"user_id": user_id, "token_version": version, "revoked": True}

    def set_active(self, user_id: int, active: bool, actor: str | None = None) -> dict[str, Any]:
        """Enable/disable a user; disabling revokes every token."""
        return self._bump(user_id, actor=actor, reason="disabled" if not active else "enabled", active=active)

    def set_roles(self, user_id: int, roles: list[str], actor: str | None = None) -> dict[str, Any]:
        """Change roles; tokens carrying the old roles are revoked."""
        assert self.users is not None
        return self._bump(user_id, actor=actor, reason="roles_changed", **self.users.set_roles_values(roles))
