"""Authorization: may this caller do what this endpoint asks? (SPEC §4.1, §6)

A pure decision on a :class:`Principal` and a :class:`Requirement`: no request, no I/O. The
request guard (:mod:`core.http.guard`) asks it after authentication and *reports* its answer
after the ban check, so the error is returned, not raised.
"""

from __future__ import annotations

from core.auth.identity import Principal, Requirement
from core.errors import Forbidden, HTTPError, Unauthorized

ADMIN_ROLE = "admin"  # passes every role check


def authorize(principal: Principal | None, requirement: Requirement) -> HTTPError | None:
    """The error to answer with, or ``None`` when ``principal`` may do what ``requirement`` asks.

    ``auth``: public | user | api_key | any. ``roles``: a user must hold one (``admin`` holds
    every role); an API key cannot hold roles, so an endpoint with roles and no scopes is closed
    to keys. ``scopes``: an API key must hold all of them (users are governed by roles).
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
    if requirement.scopes:
        if not set(requirement.scopes) <= set(principal.scopes):
            return Forbidden("The API key lacks a required scope.")
    elif requirement.roles:
        return Forbidden("This endpoint needs a user with a role; API keys hold scopes only.")
    return None


def has_role(held: tuple[str, ...] | list[str], wanted: tuple[str, ...] | list[str]) -> bool:
    """A user holding ``held`` passes a check for any one of ``wanted`` (none wanted: passes;
    ``admin`` passes every check)."""
    if not wanted or ADMIN_ROLE in held:
        return True
    return any(role in held for role in wanted)
