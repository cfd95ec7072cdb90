"""Who is calling (:class:`Principal`) and what an endpoint asks of them (:class:`Requirement`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Requirement:
    """What an endpoint asks of its caller."""

    auth: str = "any"  # public | user | api_key | any
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    rate_limit: str | None = None  # extra per-identity limit, "10/minute;100/hour"
    name: str = ""  # the action (or endpoint) name, for per-action limits and logs


@dataclass
class Principal:
    """An authenticated caller: a user (from a JWT) or an API key.

    An API key acts for its owner (``owner_id``; ``None`` for a key without one): ``roles``
    are the owner's current roles (read with the key's record), ``scopes`` the key's own.
    """

    kind: str  # "user" | "api_key"
    id: str
    name: str
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)
    owner_id: int | None = None  # an API key's owner
