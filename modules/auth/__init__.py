"""The ``auth`` module: users, tokens and API keys over HTTP (SPEC §6), under ``/auth``.

Routes are thin: the JWT manager (``am.jwt``), its user store (``am.jwt.users``) and the API
key manager (``am.api_keys``) do the work. Every route goes through the request guard, so bans
and rate limits apply to it like to any action; login also reports attempts and failures to
the limiter (per-username / per-IP login limits, failed logins counting toward bans).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from core import BaseModule
from core.actions.openapi import ERROR_REF
from core.auth.identity import Requirement
from core.errors import (
    BadRequest,
    Forbidden,
    InvalidCredentials,
    UnsupportedMediaType,
    ValidationError,
)
from core.http import auth as http_auth
from core.http.guard import check
from core.http.state import current_request_id
from core.module import ActionContext
from core.users import PASSWORD_MAX, PASSWORD_MIN, USERNAME_RE

audit = logging.getLogger("keel.audit")


def _body() -> dict[str, Any]:
    if not request.is_json:
        raise UnsupportedMediaType()
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("Malformed JSON body.")
    if not isinstance(data, dict):
        raise BadRequest("The JSON body must be an object.")
    return data


def _reply(status: int = 200, **data: Any) -> tuple[Response, int]:
    return jsonify({"success": True, **data, "request_id": current_request_id()}), status


def _required(body: dict[str, Any], *names: str) -> None:
    missing = [{"param": n, "message": "is required"} for n in names if body.get(n) in (None, "")]
    wrong = [
        {"param": n, "message": "must be a string"}
        for n in names
        if body.get(n) not in (None, "") and not isinstance(body.get(n), str)
    ]
    if missing or wrong:
        raise ValidationError(details=missing + wrong)


def _safe_username(value: Any) -> str:
    """For the audit log: the name if it looks like one (never a pasted password or token)."""
    return value if isinstance(value, str) and USERNAME_RE.fullmatch(value) and len(value) <= 64 else "<invalid>"


_STR = {"type": "string"}
_BEARER = [{"bearerAuth": []}]


def _openapi(
    view: Any,
    security: list[Any],
    status: int = 200,
    body: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
) -> None:
    """Describe a route in /openapi.json (merged by core.actions.openapi): who may call it, its
    JSON body, its success status; errors are the SPEC §3 shape."""
    success = {"type": "object", "required": ["success", "request_id"], "properties": {"success": {"const": True}}}
    doc: dict[str, Any] = {
        "security": security,
        "responses": {
            str(status): {"description": "Success", "content": {"application/json": {"schema": success}}},
            "default": ERROR_REF,
        },
    }
    if body is not None:
        schema: dict[str, Any] = {"type": "object", "properties": body}
        if required:
            schema["required"] = list(required)
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    view.__keel_openapi__ = doc


class Auth(BaseModule):
    name = "auth"
    version = "1.0.0"

    def initialize(self, app_manager: Any) -> None:
        self.am = app_manager

    def health_check(self) -> dict[str, Any]:
        return {"status": "healthy", "registration_open": bool(self.am.settings["AUTH_REGISTRATION_OPEN"])}

    def _user(self, ctx: ActionContext) -> dict[str, Any]:
        assert ctx.user is not None
        return ctx.user

    def register_routes(self, bp: Blueprint) -> None:
        am = self.am

        @bp.post("/register")
        def register() -> Any:
            check(Requirement(auth="public", name="auth_register"))
            if not am.settings["AUTH_REGISTRATION_OPEN"]:
                raise Forbidden("Registration is closed.")
            body = _body()
            _required(body, "username", "password")
            email = body.get("email")
            if email is not None and not isinstance(email, str):
                raise ValidationError(details=[{"param": "email", "message": "must be a string"}])
            user = am.jwt.users.create(body["username"], body["password"], email=email or None)
            audit.info("user registered", extra={"user_id": user.id})
            am.hooks.trigger("user_registered", user=user.public())
            return _reply(201, user=user.public())

        @bp.post("/login")
        def login() -> Any:
            ctx = check(Requirement(auth="public", name="auth_login"))
            body = _body()
            _required(body, "username", "password")
            username, password = body["username"], body["password"]
            limiter = getattr(am, "limiter", None)
            if limiter is not None and hasattr(limiter, "login_attempt"):
                limiter.login_attempt(username, ctx.client_ip)
            user = am.jwt.users.verify_password(username, password)
            if user is None:
                if limiter is not None and hasattr(limiter, "login_failed"):
                    limiter.login_failed(username, ctx.client_ip)
                audit.warning(
                    "login failed", extra={"username": _safe_username(username), "client_ip": ctx.client_ip}
                )
                raise InvalidCredentials()
            tokens = am.jwt.issue_pair(user)
            audit.info("login", extra={"user_id": user.id, "client_ip": ctx.client_ip})
            am.hooks.trigger("user_logged_in", user=user.public(), client_ip=ctx.client_ip)
            return _reply(**tokens)

        @bp.post("/refresh")
        def refresh() -> Any:
            check(Requirement(auth="public", name="auth_refresh"))
            body = _body()
            _required(body, "refresh_token")
            return _reply(**am.jwt.refresh(body["refresh_token"]))

        @bp.post("/logout")
        def logout() -> Any:
            check(Requirement(auth="user", name="auth_logout"))
            principal = http_auth.authenticate()
            assert principal is not None
            am.jwt.logout(principal.claims)
            return _reply()

        @bp.post("/logout-all")
        def logout_all() -> Any:
            ctx = check(Requirement(auth="user", name="auth_logout_all"))
            user = self._user(ctx)
            am.jwt.revoke_user_tokens(user["id"], actor=ctx.identity, reason="logout_all")
            return _reply()

        @bp.get("/me")
        def me() -> Any:
            ctx = check(Requirement(auth="user", name="auth_me"))
            user = am.jwt.users.require(self._user(ctx)["id"])
            return _reply(user=user.public())

        @bp.post("/api-keys")
        def create_api_key() -> Any:
            ctx = check(Requirement(auth="user", name="auth_api_keys_create"))
            user = self._user(ctx)
            body = _body()
            owner_id = user["id"]
            if body.get("owner_id") is not None:
                if http_auth.ADMIN_ROLE not in user["roles"]:
                    raise Forbidden("Only admins create keys for other users.")
                owner_id = am.jwt.users.require(body["owner_id"]).id
            created = am.api_keys.create(
                body.get("name"),
                body.get("scopes", []),
                owner_id=owner_id,
                expires_in_days=body.get("expires_in_days"),
                actor=ctx.identity,
            )
            return _reply(201, **created)

        @bp.get("/api-keys")
        def list_api_keys() -> Any:
            ctx = check(Requirement(auth="user", name="auth_api_keys_list"))
            user = self._user(ctx)
            is_admin = http_auth.ADMIN_ROLE in user["roles"]
            return _reply(api_keys=am.api_keys.list(user["id"], all_owners=is_admin))

        @bp.delete("/api-keys/<key_id>")
        def revoke_api_key(key_id: str) -> Any:
            ctx = check(Requirement(auth="user", name="auth_api_keys_revoke"))
            user = self._user(ctx)
            am.api_keys.revoke(
                key_id, owner_id=user["id"], admin=http_auth.ADMIN_ROLE in user["roles"], actor=ctx.identity
            )
            return _reply(revoked=key_id)

        credentials = {"username": _STR, "password": _STR}
        new_user = {
            "username": {"type": "string", "pattern": USERNAME_RE.pattern},
            "password": {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
            "email": {"type": "string", "format": "email"},
        }
        _openapi(register, [], 201, new_user, ("username", "password"))
        _openapi(login, [], 200, credentials, ("username", "password"))
        _openapi(refresh, [], 200, {"refresh_token": _STR}, ("refresh_token",))
        _openapi(logout, _BEARER)
        _openapi(logout_all, _BEARER)
        _openapi(me, _BEARER)
        key_body = {
            "name": _STR,
            "scopes": {"type": "array", "items": _STR},
            "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650},
            "owner_id": {"type": ["integer", "string"]},
        }
        _openapi(create_api_key, _BEARER, 201, key_body, ("name",))
        _openapi(list_api_keys, _BEARER)
        _openapi(revoke_api_key, _BEARER)
