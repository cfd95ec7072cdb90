"""Hand-made JWTs: raw headers/payloads signed with the app's HS256 key (or not at all)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: Any, payload: Any, key: bytes | None, digest: Any = hashlib.sha256) -> str:
    """Sign ``header``/``payload`` (objects are JSON-encoded, bytes used as they are) with HMAC."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(h)}.{b64(p)}"
    sig = "" if key is None else b64(hmac.new(key, signing_input.encode(), digest).digest())
    return f"{signing_input}.{sig}"


def claims(user_id: int, username: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": str(user_id),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "type": "access",
        "iss": "keel",
        "aud": "keel",
        "ver": 0,
        "fam": uuid.uuid4().hex,
        "name": username,
        "roles": ["admin", "user"],
    }
    for key, value in changes.items():
        if value is _DROP:
            base.pop(key, None)
        else:
            base[key] = value
    return base


class _Drop:
    pass


_DROP = _Drop()
DROP: Any = _DROP
