"""Issuing tokens and verifying them strictly, locally (SPEC §6).

Tokens are PyJWT with the algorithm pinned by ``JWT_ALGORITHM`` and signed by the
:class:`~core.auth.keys.KeySet`. :meth:`Tokens.decode` needs no Redis and no database: size
≤ 8 KiB, three base64url segments, a header holding only ``alg``/``typ``/``kid`` (so ``jku``,
``x5u``, ``jwk``, ``crit``... are rejected), the pinned ``alg``, a known, unexpired ``kid``,
the signature, every claim present with its type, ``iss``/``aud`` equal, ``exp``/``nbf``/``iat``
with ≤ 30 s leeway, lifetime ≤ ``JWT_MAX_TTL``, and the expected ``type``. Revocation is not
decided here (see :mod:`core.auth.revocation`).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import jwt

from core.auth.keys import KID_RE, KeySet, VerifyKey
from core.errors import ConfigError, Unauthorized

if TYPE_CHECKING:
    from core.auth.users import User

MAX_TOKEN_BYTES = 8 * 1024
MAX_LEEWAY = 30
VERIFIED_CACHE_SIZE = 4096
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{2,2048}\.[A-Za-z0-9_-]{2,8192}\.[A-Za-z0-9_-]{0,8192}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
_TYPES = ("access", "refresh")
_REQUIRED = ("sub", "jti", "iat", "nbf", "exp", "type", "iss", "aud", "ver", "fam")
# What PyJWT or a hostile token's JSON may raise while being decoded: all mean "invalid".
_INVALID = (jwt.PyJWTError, ValueError, TypeError, KeyError, RecursionError, OverflowError, AttributeError)


class Tokens:
    """Access/refresh token pairs: their claims, their signature and their strict verification.

    A token that verified before is found in a small in-process cache keyed by its exact text
    (the signature and the claims' shapes cannot change); its time claims, type and key
    retirement are checked again on every use.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        leeway: int,
        access_ttl: int,
        refresh_ttl: int,
        max_ttl: int,
    ) -> None:
        self.keys = keys
        self.algorithm = keys.algorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.max_ttl = max_ttl
        self._verified: dict[str, tuple[dict[str, Any], float | None]] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> Tokens:
        """The ``JWT_*`` settings, checked (a ConfigError names the key and its source)."""
        if settings["JWT_LEEWAY"] > MAX_LEEWAY:
            raise ConfigError(
                f"JWT_LEEWAY from {settings.source('JWT_LEEWAY')}: expected at most {MAX_LEEWAY} seconds"
            )
        max_ttl = int(settings["JWT_MAX_TTL"])
        for key in ("JWT_ACCESS_TTL", "JWT_REFRESH_TTL"):
            if settings[key] > max_ttl:
                raise ConfigError(f"{key} from {settings.source(key)}: expected at most JWT_MAX_TTL ({max_ttl})")
        return cls(
            KeySet.from_settings(settings),
            issuer=settings["JWT_ISSUER"],
            audience=settings["JWT_AUDIENCE"],
            leeway=int(settings["JWT_LEEWAY"]),
            access_ttl=int(settings["JWT_ACCESS_TTL"]),
            refresh_ttl=int(settings["JWT_REFRESH_TTL"]),
            max_ttl=max_ttl,
        )

    # -- issuing ------------------------------------------------------------------------------
    def pair(self, user: User, fam: str, refresh_jti: str) -> dict[str, Any]:
        """A new access token and the refresh token ``refresh_jti`` of family ``fam``."""
        now = int(time.time())
        access = self._encode(self._claims(user, "access", self.access_ttl, fam, uuid.uuid4().hex, now))
        refresh = self._encode(self._claims(user, "refresh", self.refresh_ttl, fam, refresh_jti, now))
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
        }

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims,
            self.keys.signing_key,
            algorithm=self.algorithm,
            headers={"kid": self.keys.signing_kid, "typ": "JWT"},
        )

    def _claims(self, user: User, kind: str, ttl: int, fam: str, jti: str, now: int) -> dict[str, Any]:
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

    # -- verification -------------------------------------------------------------------------
    def decode(self, token: Any, expected_type: str) -> dict[str, Any]:
        """Verified claims of ``token`` or :class:`Unauthorized` (one generic message)."""
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
            claims, not_after = self._verify(token, expected_type)
        except _INVALID:
            raise Unauthorized() from None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # crude but lock-free; refilled by the next requests
        self._verified[token] = (claims, not_after)
        return dict(claims)

    def _verify(self, token: Any, expected_type: str) -> tuple[dict[str, Any], float | None]:
        """Every check of a token never seen before; any failure is :class:`Unauthorized`."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or not _TOKEN_RE.match(token):
            raise Unauthorized()
        vk = self._verify_key(jwt.get_unverified_header(token))
        claims = jwt.decode(
            token,
            vk.key,
            algorithms=[self.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options={"require": list(_REQUIRED), "strict_aud": True},
        )
        if not (
            self._times_valid(claims)
            and self._identity_valid(claims, expected_type)
            and (expected_type != "access" or _access_claims_valid(claims))
        ):
            raise Unauthorized()
        return dict(claims), vk.not_after

    def _verify_key(self, header: Any) -> VerifyKey:
        """The key named by a header that holds only the pinned ``alg``, ``typ`` JWT and a known,
        unretired ``kid``."""
        if not isinstance(header, dict) or not set(header) <= _ALLOWED_HEADER:
            raise Unauthorized()
        if header.get("alg") != self.algorithm or header.get("typ", "JWT") != "JWT":
            raise Unauthorized()
        kid = header.get("kid")
        vk = self.keys.verify.get(kid) if isinstance(kid, str) and KID_RE.match(kid) else None
        if vk is None or (vk.not_after is not None and time.time() > vk.not_after):
            raise Unauthorized()
        return vk

    def _times_valid(self, claims: dict[str, Any]) -> bool:
        """Integer times and version, a positive lifetime within ``JWT_MAX_TTL``, nbf ≤ exp."""
        exp, iat, nbf, ver = claims["exp"], claims["iat"], claims["nbf"], claims["ver"]
        if not all(type(value) is int for value in (exp, iat, nbf, ver)):
            return False
        return 0 < exp - iat <= self.max_ttl and nbf <= exp and ver >= 0

    def _identity_valid(self, claims: dict[str, Any], expected_type: str) -> bool:
        """Our issuer and audience, the expected type, a numeric ``sub``, hex ``jti``/``fam``."""
        sub = claims["sub"]
        return (
            claims["iss"] == self.issuer
            and claims["aud"] == self.audience
            and claims["type"] in _TYPES
            and claims["type"] == expected_type
            and isinstance(sub, str)
            and sub.isascii()
            and sub.isdigit()
            and len(sub) <= 18
            and _is_hex32(claims["jti"])
            and _is_hex32(claims["fam"])
        )


def _is_hex32(value: Any) -> bool:
    return isinstance(value, str) and _HEX32.match(value) is not None


def _access_claims_valid(claims: dict[str, Any]) -> bool:
    """An access token names its user and lists its roles as strings."""
    roles = claims.get("roles")
    return (
        isinstance(claims.get("name"), str)
        and isinstance(roles, list)
        and all(isinstance(r, str) for r in roles)
    )
