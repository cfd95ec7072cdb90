"""The ``auth`` module: users, tokens and API keys over HTTP (SPEC §6), under ``/auth``.

Routes are thin: the JWT manager (``am.jwt``), its user store (``am.jwt.users``), its device
tokens (``am.jwt.devices``) and the API key manager (``am.api_keys``) do the work. Every route
is ``@protect``-ed, so bans, rate limits, parameter validation, the error shape and the OpenAPI
entry work as for any action; login also reports attempts and failures to the limiter (per-IP
and per-username — or per-device-token — login limits, failed logins counting toward bans), and
answers with a device token (JSON field and cookie, see :mod:`core.auth.devices`). Creating
API keys has its own per-user limit (``RATE_LIMIT_API_KEY_CREATE``).

The routes accept and ignore parameters they do not declare (``additional_params=True``), as
they always have.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, after_this_request, request

from core import (
    PASSWORD_MAX,
    PASSWORD_MIN,
    USERNAME_RE,
    ActionContext,
    BaseModule,
    Forbidden,
    audit,
    protect,
)

_STRING = {"type": "string", "required": True, "minLength": 1}
CREDENTIALS = {"username": _STRING, "password": _STRING}
LOGIN = {
    **CREDENTIALS,
    # a device token this login route returned earlier (API clients; browsers send the cookie)
    "device_token": {"type": "string", "nullable": True, "maxLength": 512, "secret": True},
}
NEW_USER = {
    "username": {"type": "string", "required": True, "pattern": USERNAME_RE.pattern},
    "password": {"type": "string", "required": True, "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
    "email": {"type": "string", "format": "email", "nullable": True},
}
NEW_KEY = {
    "name": {"type": "string", "required": True},
    "scopes": {"type": "array", "items": {"type": "string"}, "default": []},
    "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650, "nullable": True},
    # and "owner_id" (admins only: a user id or a username), undeclared: a parameter has one type
}


class Auth(BaseModule):
    name = "auth"
    version = "1.0.0"

    def initialize(self, app_manager: Any) -> None:
        self.am = app_manager

    def health_check(self) -> dict[str, Any]:
        return {"status": "healthy", "registration_open": bool(self.am.settings["AUTH_REGISTRATION_OPEN"])}

    def register_routes(self, bp: Blueprint) -> None:
        self._session_routes(bp)
        self._api_key_routes(bp)

    def _session_routes(self, bp: Blueprint) -> None:
        am = self.am

        @bp.post("/register")
        @protect(auth="public", params=NEW_USER, additional_params=True, status=201, summary="Create a user")
        def register(params: dict[str, Any], ctx: ActionContext) -> Any:
            if not am.settings["AUTH_REGISTRATION_OPEN"]:
                raise Forbidden("Registration is closed.")
            user = am.jwt.users.create(params["username"], params["password"], email=params.get("email") or None)
            audit("user_created", user_id=user.id, roles=",".join(user.roles), actor="register")
            am.hooks.trigger("user_registered", user=user.public())
            return {"user": user.public()}

        @bp.post("/login")
        @protect(auth="public", params=LOGIN, additional_params=True, summary="Log in: a token pair", no_store=True)
        def login(params: dict[str, Any], ctx: ActionContext) -> Any:
            """Answers a token pair and a ``device_token`` (also set as the ``keel_device``
            cookie): send it back with later logins from this device (``device_token``), so
            that they are counted apart from other clients' attempts for this username."""
            devices = am.jwt.devices
            user = am.jwt.check_login(
                params["username"],
                params["password"],
                ctx.client_ip,
                (params.get("device_token"), request.cookies.get(devices.cookie)),
            )
            tokens = am.jwt.issue_pair(user)
            device_token = devices.issue(user)
            if device_token is not None:
                tokens["device_token"] = device_token
                _set_device_cookie(devices.cookie, device_token, devices.ttl)
            audit("login", user_id=user.id)
            am.hooks.trigger("user_logged_in", user=user.public(), client_ip=ctx.client_ip)
            return tokens

        @bp.post("/refresh")
        @protect(
            auth="public",
            params={"refresh_token": _STRING},
            additional_params=True,
            summary="Spend a refresh token for a new pair",
            no_store=True,
        )
        def refresh(params: dict[str, Any], ctx: ActionContext) -> Any:
            return am.jwt.refresh(params["refresh_token"])

        @bp.post("/logout")
        @protect(auth="user", additional_params=True, summary="Revoke this access token and its refresh family")
        def logout(params: dict[str, Any], ctx: ActionContext) -> Any:
            am.jwt.logout(ctx.claims)

        @bp.post("/logout-all")
        @protect(auth="user", additional_params=True, summary="Revoke every token of the user")
        def logout_all(params: dict[str, Any], ctx: ActionContext) -> Any:
            am.jwt.revoke_user_tokens(_user(ctx)["id"], actor=ctx.identity, reason="logout_all")

        @bp.get("/me")
        @protect(auth="user", additional_params=True, summary="The current user")
        def me(params: dict[str, Any], ctx: ActionContext) -> Any:
            return {"user": am.jwt.users.require(_user(ctx)["id"]).public()}

    def _api_key_routes(self, bp: Blueprint) -> None:
        am = self.am

        @bp.post("/api-keys")
        @protect(
            auth="user",
            params=NEW_KEY,
            additional_params=True,
            status=201,
            summary="Create an API key (the full key is in this answer only)",
            no_store=True,
            rate_limit=am.settings["RATE_LIMIT_API_KEY_CREATE"],
        )
        def create_api_key(params: dict[str, Any], ctx: ActionContext) -> Any:
            """An admin may create a key for another user: ``owner_id``, their id or username.
            ``scopes``: scopes that endpoints declare. A user holds at most
            ``API_KEYS_PER_USER`` live keys (409 beyond)."""
            owner_id = _user(ctx)["id"]
            if params.get("owner_id") is not None:
                if not ctx.has_role("admin"):
                    raise Forbidden("Only admins create keys for other users.")
                owner_id = am.jwt.users.require(params["owner_id"]).id
            return am.api_keys.create(
                params["name"],
                params["scopes"],
                owner_id=owner_id,
                expires_in_days=params.get("expires_in_days"),
                actor=ctx.identity,
            )

        @bp.get("/api-keys")
        @protect(auth="user", additional_params=True, summary="API keys: yours, or every key for an admin")
        def list_api_keys(params: dict[str, Any], ctx: ActionContext) -> Any:
            return {"api_keys": am.api_keys.list(_user(ctx)["id"], all_owners=ctx.has_role("admin"))}

        @bp.delete("/api-keys/<key_id>")
        @protect(auth="user", additional_params=True, summary="Revoke an API key")
        def revoke_api_key(params: dict[str, Any], ctx: ActionContext) -> Any:
            user = _user(ctx)
            am.api_keys.revoke(params["key_id"], owner_id=user["id"], admin=ctx.has_role("admin"), actor=ctx.identity)
            return {"revoked": params["key_id"]}


def _set_device_cookie(name: str, token: str, ttl: int) -> None:
    """The device token as a cookie for browsers: only sent back to the login route, never
    readable by scripts, never over plain HTTP (but to localhost), never cross-site."""
    path = request.path

    @after_this_request
    def set_cookie(response: Response) -> Response:
        response.set_cookie(name, token, max_age=ttl, path=path, secure=True, httponly=True, samesite="Strict")
        return response


def _user(ctx: ActionContext) -> dict[str, Any]:
    """The calling user (every route that asks has ``auth="user"``)."""
    assert ctx.user is not None
    return ctx.user
