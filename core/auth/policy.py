"""Authorization: may this caller do what this endpoint asks? (SPEC §4.1, §6)

A pure decision on a :class:`Principal` and a :class:`Requirement`: no request, no I/O. The
request guard (:mod:`core.http.guard`) asks it after authentication and *reports* its answer
after the ban check, so the error is returned, not raised.

An API key acts for its owner and never reaches more than the owner could: an endpoint's
``roles`` are checked against the owner's current roles (the principal carries them, read
with the key's record; a disabled owner's key does not authenticate at all), and the key's
``scopes`` narrow further. An endpoint that declares ``roles`` names the keys it admits by
also listing ``scopes``: with ``roles`` and no ``scopes`` it is closed to every key, and a key
without an owner (created by an operator) passes ``roles`` only on an endpoint that lists
``scopes``, all of which it holds.
"""

from __future__ import annotations

from core.auth.identity import Principal, Requirement
from core.errors import Forbidden, HTTPError, Unauthorized

ADMIN_ROLE = "admin"  # passes every role check


def authorize(principal: Principal | None, requirement: Requirement) -> HTTPError | None:
    """The error to answer with, or ``None`` when ``principal`` may do what ``requirement`` asks.

    ``auth``: public | user | api_key | any. ``roles``: a user must hold one (``admin`` holds
    every role); so must an API key's owner, and the endpoint must list ``scopes`` for a key
    to pass at all. ``scopes``: an API key must hold all of them (users are governed by roles).
    401 for no credential; 403 for a valid one of the wrong kind or without the role/scope.
    """
    if requirement.auth == "public":
        return None
    if principal is None:
        return Unauthorized()
    if requirement.auth == "user" and principal.kind != "user":
        return Forbidden("This endpoint needs a user token, not an API key.")
    if requirement.auth == "api_key" and principal.kind != "api_key":
        return Forbidden("This endpoint needs an API key.")
    if principal.kind == "user":
        return None if has_role(principal.roles, requirement.roles) else Forbidden("A required role is missing.")
    return _authorize_key(principal, requirement)


def _authorize_key(principal: Principal, requirement: Requirement) -> HTTPError | None:
    """An API key: every scope of the endpoint, and its roles through the key's owner."""
    if requirement.scopes and not set(requirement.scopes) <= set(principal.scopes):
        return Forbidden("The API key lacks a required scope.")
    if requirement.roles:
        if not requirement.scopes:
            return Forbidden("This endpoint needs a user with a role; API keys reach one only when it lists scopes.")
        if principal.owner_id is not None and not has_role(principal.roles, requirement.roles):
            return Forbidden("The API key's owner lacks a required role.")
    return None


def has_role(held: tuple[str, ...] | list[str], wanted: tuple[str, ...] | list[str]) -> bool:
    """A user holding ``held`` passes a check for any one of ``wanted`` (none wanted: passes;
    ``admin`` passes every check)."""
    if not wanted or ADMIN_ROLE in held:
        return True
    return any(role in held for role in wanted)
