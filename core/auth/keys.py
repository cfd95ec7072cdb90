"""Token keys (SPEC §6): the signing key and every key that may still verify, by ``kid``.

``JWT_ALGORITHM`` pins the algorithm. HS256 signs with ``JWT_SECRET_KEY`` (≥ 32 bytes); any
algorithm may use a JWK set in ``JWT_KEYS`` (JSON or a file path) whose keys carry a ``kid``;
a key with ``"retired_at": <unix time>`` still verifies for ``JWT_KEY_GRACE`` seconds, then its
tokens are rejected. RS256/ES256/EdDSA without ``JWT_KEYS`` get an ephemeral key in
development and test only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from core.errors import ConfigError

logger = logging.getLogger(__name__)

KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
        verify: dict[str, VerifyKey] = {}
        signing: tuple[str, Any] | None = None
        for index, jwk_data in enumerate(_read_jwks(raw)):
            kid, key, verify_key, private = _parse_jwk(index, jwk_data, algorithm, grace)
            verify[kid] = verify_key
            current = verify_key.not_after is None
            if private and current and signing is None and (wanted_kid is None or wanted_kid == kid):
                signing = (kid, key)
        if signing is None:
            which = f"kid {wanted_kid!r}" if wanted_kid else "a private key"
            raise ConfigError(f"JWT_KEYS: no current (not retired) signing key: expected {which} in the set")
        if algorithm == "HS256" and len(signing[1]) < 32:
            raise ConfigError("JWT_KEYS: the HS256 signing key is shorter than 32 bytes")
        return cls(algorithm, signing[0], signing[1], verify)


def _read_jwks(raw: str) -> list[Any]:
    """The ``keys`` list of the JWK set in ``raw`` (JSON text or the path of a file holding it)."""
    text = raw.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"JWT_KEYS: cannot read key set file: {exc.strerror}") from None
    try:
        keys = json.loads(text)["keys"]
    except (ValueError, KeyError, TypeError):
        keys = None
    if not isinstance(keys, list) or not keys:
        raise ConfigError('JWT_KEYS: expected a JWK set {"keys": [{...,"kid": "..."}]}')
    return keys


def _parse_jwk(index: int, jwk_data: Any, algorithm: str, grace: int) -> tuple[str, Any, VerifyKey, bool]:
    """``(kid, key, verify key, is private)`` of the JWK at ``index``, or a ConfigError naming it."""
    kid = jwk_data.get("kid") if isinstance(jwk_data, dict) else None
    if not isinstance(kid, str) or not KID_RE.match(kid):
        raise ConfigError(f"JWT_KEYS: key #{index} needs a 'kid' of 1-64 characters [A-Za-z0-9_-]")
    try:
        key = jwt.PyJWK(jwk_data, algorithm=algorithm).key
    except jwt.PyJWTError as exc:
        raise ConfigError(f"JWT_KEYS: key {kid!r} is not a valid {algorithm} JWK: {exc}") from None
    retired = jwk_data.get("retired_at")
    if retired is not None and not isinstance(retired, int | float):
        raise ConfigError(f"JWT_KEYS: key {kid!r}: retired_at must be a unix time")
    private = algorithm == "HS256" or "d" in jwk_data
    public = key.public_key() if private and algorithm != "HS256" else key
    return kid, key, VerifyKey(kid, public, None if retired is None else float(retired) + grace), private


def _generate_private_key(algorithm: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()
