"""CryptoManager: encryption of sensitive fields at rest (SPEC §10).

Keys come from the setting ``ENCRYPTION_KEYS`` (secret: a secret file, Vault or the
environment), a comma-separated list of Fernet keys, **newest first**. ``encrypt`` always uses
the newest key; ``decrypt`` accepts a token made with any listed key, so a key is rotated by
prepending the new one, re-encrypting stored values with ``rotate`` (or lazily, when they are
next written), and removing the old key once nothing uses it. Fernet = AES-128-CBC +
HMAC-SHA256 with a timestamp (``cryptography``).

    token = am.crypto.encrypt("4111 1111 1111 1111")   # str in, URL-safe str out
    am.crypto.decrypt(token)                           # -> "4111 1111 1111 1111"
    am.crypto.rotate(token)                            # same plaintext, newest key
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask

from core.errors import ConfigError, KeelError
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager


class DecryptionError(KeelError):
    """A token was not made by any configured key, or was altered."""


class CryptoManager(Manager):
    name: ClassVar[str] = "crypto"

    def __init__(self) -> None:
        self._fernet: MultiFernet | None = None
        self._count = 0

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        settings = am.settings
        self.configure(settings["ENCRYPTION_KEYS"] or [], source=settings.source("ENCRYPTION_KEYS"))

    def configure(self, keys: list[str], source: str = "argument") -> None:
        """Use ``keys`` (newest first). Raises :class:`ConfigError` naming a bad key's position."""
        fernets = []
        for index, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.encode() if isinstance(key, str) else key))
            except (ValueError, TypeError):
                raise ConfigError(
                    f"ENCRYPTION_KEYS from {source}: key #{index + 1} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes; make one with "
                    "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
                ) from None
        self._fernet = MultiFernet(fernets) if fernets else None
        self._count = len(fernets)

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def _require(self) -> MultiFernet:
        if self._fernet is None:
            raise ConfigError("encryption requested but ENCRYPTION_KEYS is not set")
        return self._fernet

    def encrypt(self, value: str | bytes) -> str:
        """Encrypt with the newest key; returns a URL-safe text token."""
        raw = value.encode() if isinstance(value, str) else value
        return self._require().encrypt(raw).decode("ascii")

    def decrypt_bytes(self, token: str | bytes, ttl: int | None = None) -> bytes:
        """Decrypt a token made with any configured key (``ttl``: reject older tokens)."""
        raw = token.encode("ascii") if isinstance(token, str) else token
        try:
            return self._require().decrypt(raw, ttl=ttl)
        except InvalidToken:
            raise DecryptionError("cannot decrypt: unknown key, altered or expired token") from None

    def decrypt(self, token: str | bytes, ttl: int | None = None) -> str:
        return self.decrypt_bytes(token, ttl).decode("utf-8")

    def rotate(self, token: str | bytes) -> str:
        """Re-encrypt ``token`` with the newest key (the timestamp is kept)."""
        raw = token.encode("ascii") if isinstance(token, str) else token
        try:
            return self._require().rotate(raw).decode("ascii")
        except InvalidToken:
            raise DecryptionError("cannot rotate: unknown key or altered token") from None

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "enabled": self.enabled, "keys": self._count}
