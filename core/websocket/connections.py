"""This process's Socket.IO connections and who a forced disconnect reaches (SPEC §8).

A :class:`Connection` is made once, at connect, from the credential the server verified: the
identity it acts for is never read from an event's payload. Several connections of one user
(tabs, devices, API keys the user owns) share one ``member`` key, so they are one member of a
room.

A forced disconnect names a :class:`Target`; :meth:`Registry.matching` finds the connections it
hits:

- ``family`` — the connections made with a token of that refresh family (a logout);
- ``user_tokens`` — every connection made with one of the user's tokens (logout-all, password
  change, ``revoke_user_tokens``, a ban of the user: HTTP bans a user's tokens, not their keys);
- ``user`` — every connection acting for the user, API keys included (a disabled user,
  ``disconnect_identity(user_id=...)``);
- ``api_key`` — the connections made with that key (revoked or banned);
- ``ip`` — the connections from that address (banned).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

MATCHES = ("family", "user_tokens", "user", "api_key", "ip")


@dataclass(eq=False)
class Connection:
    sid: str
    kind: str  # "user" (a JWT) | "api_key"
    principal_id: str  # the user id of a token, the key id of an API key
    member: str  # "user:<id>" (tokens and keys with an owner) | "api_key:<id>" (no owner)
    user: dict[str, Any]  # {"user_id", "username"}: what presence and messages show
    ip: str
    family: str | None = None  # the refresh family of a token
    rooms: set[str] = field(default_factory=set)

    @property
    def identity(self) -> tuple[str, str]:
        """The identity whose bans apply and whose limit violations count (as on HTTP)."""
        return (self.kind, self.principal_id)


@dataclass(frozen=True)
class Target:
    """Who a forced disconnect hits (see the module docstring) and why."""

    match: str
    id: str
    reason: str

    def as_message(self) -> dict[str, str]:
        return {"match": self.match, "id": self.id, "reason": self.reason}

    @classmethod
    def from_message(cls, message: Any) -> Target | None:
        """The target of a published message, ``None`` for anything malformed."""
        if not isinstance(message, dict):
            return None
        match, ident, reason = message.get("match"), message.get("id"), message.get("reason")
        if match not in MATCHES or not isinstance(ident, str) or not isinstance(reason, str):
            return None
        return cls(match, ident, reason)

    def hits(self, conn: Connection) -> bool:
        match = self.match
        if match == "family":
            return conn.kind == "user" and conn.family == self.id
        if match == "user_tokens":
            return conn.kind == "user" and conn.principal_id == self.id
        if match == "user":
            return str(conn.user.get("user_id")) == self.id
        if match == "api_key":
            return conn.kind == "api_key" and conn.principal_id == self.id
        return conn.ip == self.id  # "ip"


class Registry:
    """The connections of this process by Socket.IO sid (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sid: dict[str, Connection] = {}

    def add(self, conn: Connection) -> None:
        with self._lock:
            self._by_sid[conn.sid] = conn

    def remove(self, sid: str) -> Connection | None:
        with self._lock:
            return self._by_sid.pop(sid, None)

    def get(self, sid: str) -> Connection | None:
        return self._by_sid.get(sid)

    def all(self) -> list[Connection]:
        with self._lock:
            return list(self._by_sid.values())

    def matching(self, target: Target) -> list[Connection]:
        return [conn for conn in self.all() if target.hits(conn)]

    def __len__(self) -> int:
        return len(self._by_sid)
