"""Device tokens: the owner of an account is not locked out by strangers' wrong passwords.

OWASP's "device cookies" (Slow Down Online Guessing Attacks with Device Cookies). Login
attempts are limited per username, against guessing spread over many addresses; on its own,
that lets anyone who sends wrong passwords for a name lock its owner out. So a successful login
also returns a *device token*, and a later login presenting a valid device token of that user
is counted against the token's own bucket (``login:device:<id>``), not the username's: the
strangers use up the username's attempts, the owner's devices keep theirs.

A token is ``kd1.<user id>.<expiry>.<id>.<mac>``: a random 128-bit id, an expiry
(``AUTH_DEVICE_TTL``, 30 days by default; ``0`` issues none) and an HMAC-SHA256 over the user
id, the user's normalised name, the expiry and the id, under a key derived from
``API_KEY_PEPPER`` (a server-side secret already required in production; the derivation keeps
the two uses apart). Nothing is stored: a token is valid for the name it was issued to until it
expires. It is a rate-limit bucket, never a credential: the password is still checked, and a
forged, expired or another user's token is simply not one (the username's bucket counts that
attempt). Stolen, it gives its thief one bucket of attempts for that one user — what the
username bucket gives anyone.

The login route returns it in the JSON answer (``device_token``, for API clients, which send
it back as the ``device_token`` body field) and as a cookie (``keel_device``: ``HttpOnly;
Secure; SameSite=Strict``, path the login route's) that browsers send back by themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from core.auth.users import USERNAME_MAX, User, username_key

COOKIE = "keel_device"
PREFIX = "kd1"
TOKEN_RE = re.compile(rf"^{PREFIX}\.([0-9]{{1,19}})\.([0-9]{{1,12}})\.([A-Za-z0-9_-]{{22}})\.([A-Za-z0-9_-]{{43}})$")
TOKEN_MAX = 160  # longer strings are not looked at


class DeviceTokens:
    """Issues and verifies device tokens (see the module docstring)."""

    cookie = COOKIE  # the name of the cookie that carries one

    def __init__(self, pepper: bytes, ttl: int) -> None:
        self._key = hmac.new(pepper, b"keel-device-token-v1", hashlib.sha256).digest()
        self.ttl = ttl

    def _mac(self, user_id: str, name_key: str, expires: str, device: str) -> str:
        message = f"{user_id}|{name_key}|{expires}|{device}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, user: User) -> str | None:
        """A new device token of ``user``, or ``None`` when ``AUTH_DEVICE_TTL`` is 0."""
        if self.ttl <= 0:
            return None
        expires = str(int(time.time()) + self.ttl)
        device = secrets.token_urlsafe(16)  # 128 bits, 22 characters
        mac = self._mac(str(user.id), username_key(user.username), expires, device)
        return f"{PREFIX}.{user.id}.{expires}.{device}.{mac}"

    def verify(self, token: Any, username: Any) -> str | None:
        """The device id of ``token`` when it is a valid, unexpired token issued to the user
        named ``username`` (in any case or compatibility form), else ``None``."""
        if self.ttl <= 0 or not isinstance(token, str) or not isinstance(username, str):
            return None
        if len(token) > TOKEN_MAX or not 0 < len(username) <= USERNAME_MAX:
            return None
        match = TOKEN_RE.fullmatch(token)
        if match is None:
            return None
        user_id, expires, device, mac = match.groups()
        left = int(expires) - time.time()
        if not 0 < left <= self.ttl:  # expired, or issued under a longer AUTH_DEVICE_TTL than now
            return None
        if not hmac.compare_digest(self._mac(user_id, username_key(username), expires, device), mac):
            return None
        return device
