"""JWTManager: access/refresh tokens, rotation with reuse detection, revocation (SPEC §6).

The facade a reader finds first; the concepts live in :mod:`core.auth`:

- :mod:`core.auth.keys` — the signing key and the keys that still verify (``JWT_KEYS``, grace);
- :mod:`core.auth.tokens` — issuing pairs and the strict, local :meth:`decode`;
- :mod:`core.auth.families` — refresh families: a refresh is a compare-and-set, so of N
  concurrent refreshes with one token exactly one wins; a spent token revokes its family;
- :mod:`core.auth.revocation` — the deny-list in the database and Redis (shared with API
  keys): :meth:`revocation_keys` names the Redis keys the rate limiter reads in its single
  round trip, :meth:`check_revocation` decides from their values; Redis down → the database
  answers; both down → 503. A disabled or deleted user's tokens are refused on every path:
  Redis holds every user's state, kept in step with the ``users`` table by the store's
  watcher and, for rows changed by hand, by a background sync (``start()``);
- :mod:`core.auth.users` — the user store (``am.jwt.users``, also the ``users`` service);
  ``start()`` gives a table created before usernames had a normalised key its column;
- :mod:`core.auth.devices` — device tokens (``am.jwt.devices``): a login presenting one of
  its user's is counted apart from the username's attempts (OWASP device cookies).

No token is issued to a banned user (SPEC §6): a login or a refresh of a user under a ban
answers 403 ``banned`` with ``Retry-After``.

Every revocation is written to the ``keel.audit`` log and fires the ``tokens_revoked`` hook.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask

from core.auth.devices import DeviceTokens
from core.auth.families import RefreshFamilies
from core.auth.revocation import Revocation
from core.auth.tokens import Tokens
from core.auth.users import USERNAME_RE, UserStore
from core.errors import Banned, InvalidCredentials, NotFound, ServiceUnavailable, Unauthorized
from core.logs import audit
from core.managers.base import Manager

if TYPE_CHECKING:
    import sqlalchemy as sa

    from core.app_manager import AppManager
    from core.auth.identity import Principal
    from core.auth.keys import KeySet
    from core.auth.users import User, UserChange

logger = logging.getLogger(__name__)
def _safe_username(value: Any) -> str:
    """For the audit log: the name if it looks like one (never a pasted password or token)."""
    return value if isinstance(value, str) and len(value) <= 64 and USERNAME_RE.fullmatch(value) else "<invalid>"


# The audit event of each reason for revoking all of a user's tokens (anything else: tokens_revoked).
_ALL_REVOKED_EVENTS = {
    "logout_all": "logout_all",
    "disabled": "user_disabled",
    "enabled": "user_enabled",
    "roles_changed": "user_roles_changed",
}


class JWTManager(Manager):
    name: ClassVar[str] = "jwt"

    # -- lifecycle ----------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am
        self.tokens = Tokens.from_settings(am.settings)
        self.users = UserStore(am.db, am.settings["APP_ENV"])
        self.refresh_families = RefreshFamilies(am.db)
        # Keyed by API_KEY_PEPPER (checked by the API key manager: set, ≥ 16 bytes).
        self.devices = DeviceTokens((am.settings["API_KEY_PEPPER"] or "").encode(), int(am.settings["AUTH_DEVICE_TTL"]))
        lifetime = self.tokens.max_ttl + self.tokens.leeway
        self.revocation = Revocation(am.db, am.redis, self.users, lifetime)
        self.users.watch(self._user_changed)
        if "users" not in am.services:
            am.services.register("users", self.users)
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None

    def start(self) -> None:
        """Give an older ``users`` table its username key; with Redis, start the background
        sync of users' states (rows changed by hand)."""
        try:
            self.users.ensure_schema()
        except ServiceUnavailable as exc:
            logger.error("database unavailable at start (%s); the users table is checked at its first use", exc)
        if self.am.redis.client is not None and self._sync_thread is None:
            self._stop.clear()
            self._sync_thread = threading.Thread(target=self._sync_users, name="keel-auth-users-sync", daemon=True)
            self._sync_thread.start()

    def _sync_users(self) -> None:
        while not self._stop.wait(self.revocation.sync_interval):
            try:
                self.revocation.sync_users()
            except Exception:
                # An unexpected error must not end the sync for the life of the process: the
                # next round retries, and Redis or the database being down is handled inside.
                logger.exception("syncing users' states to Redis failed")

    def dispose(self) -> None:
        self._stop.set()
        thread, self._sync_thread = self._sync_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "algorithm": self.algorithm, "kid": self.keys.signing_kid}

    # -- settings and tables (read-only views) ------------------------------------------------
    @property
    def keys(self) -> KeySet:
        return self.tokens.keys

    @property
    def algorithm(self) -> str:
        return self.tokens.algorithm

    @property
    def access_ttl(self) -> int:
        return self.tokens.access_ttl

    @property
    def refresh_ttl(self) -> int:
        return self.tokens.refresh_ttl

    @property
    def leeway(self) -> int:
        return self.tokens.leeway

    @property
    def revocations(self) -> sa.Table:
        return self.revocation.table

    @property
    def families(self) -> sa.Table:
        return self.refresh_families.table

    # -- tokens -------------------------------------------------------------------------------
    def check_login(self, username: str, password: str, client_ip: str, device_tokens: tuple[Any, ...] = ()) -> User:
        """The one login check, for every sign-in form (``POST /auth/login``, ``/admin``):
        count the attempt per IP and per username — or in its own bucket when one of
        ``device_tokens`` is a valid device token of that user (OWASP device cookies) — raising
        429, or 403 while banned; verify the password (the same work for an unknown name); on
        failure count a violation of the IP, audit it and raise :class:`InvalidCredentials`;
        refuse a banned user (403 ``banned``)."""
        device = next((d for d in (self.devices.verify(t, username) for t in device_tokens) if d), None)
        self.am.limiter.login_attempt(username, client_ip, device=device)
        user = self.users.verify_password(username, password)
        if user is None:
            self.am.limiter.login_failed(username, client_ip)
            audit("login", "failed", username=_safe_username(username))
            raise InvalidCredentials()
        self._unless_banned(user.id)
        return user

    def issue_pair(self, user: User) -> dict[str, Any]:
        """A new access/refresh pair starting a new refresh family (login); :class:`Banned`
        while the user is banned."""
        self._unless_banned(user.id)
        fam, jti = self.refresh_families.start(user.id)
        return self.tokens.pair(user, fam, jti)

    def refresh(self, token: Any) -> dict[str, Any]:
        """Rotate: spend ``token`` and return a new pair of the same family.

        A spent (or unknown) refresh token of a live family is a reuse: the family is revoked.
        A banned user's refresh is refused (:class:`Banned`) without spending the token.
        """
        claims = self.tokens.decode(token, "refresh")
        user_id, fam = int(claims["sub"]), claims["fam"]
        user = self.users.get(user_id)
        if user is None or not user.active or user.token_version != claims["ver"]:
            raise Unauthorized()
        self._unless_banned(user_id)
        new_jti = self.refresh_families.rotate(fam, claims["jti"], user_id)
        if new_jti is None:
            if self.refresh_families.is_live(fam):
                audit("refresh_reuse", "refused", "refresh token reuse: family revoked", user_id=user_id)
                self._deny_family(fam, user_id=user_id, reason="refresh_reuse", actor=None)
            raise Unauthorized()
        return self.tokens.pair(user, fam, new_jti)

    def _unless_banned(self, user_id: int) -> None:
        """Raise :class:`Banned` (403, ``Retry-After``) while ``user:<user_id>`` is banned."""
        remaining = self.am.limiter.ban_remaining("user", str(user_id))
        if remaining is not None:
            raise Banned(retry_after=remaining)

    def decode(self, token: Any, expected_type: str) -> dict[str, Any]:
        """Verified claims of ``token`` or :class:`Unauthorized` (local: no Redis, no database)."""
        return self.tokens.decode(token, expected_type)

    # -- revocation ---------------------------------------------------------------------------
    def revocation_keys(self, principal: Principal) -> list[str]:
        """The Redis keys whose values decide whether ``principal``'s token is revoked, in the
        order :meth:`check_revocation` expects their values."""
        return self.revocation.token_keys(principal.claims)

    def check_revocation(self, principal: Principal, values: list[Any] | None = None) -> None:
        """Raise :class:`Unauthorized` if the token is revoked; ``values`` were read for
        :meth:`revocation_keys` by the caller (``None``: read them here)."""
        self.revocation.check_token(principal.claims, values)

    def revoke_family(self, fam: str, *, user_id: int, reason: str, actor: str | None = None) -> None:
        """Deny every token of a refresh family."""
        self._deny_family(fam, user_id=user_id, reason=reason, actor=actor)
        audit("token_family_revoked", user_id=user_id, reason=reason, actor=actor)

    def _deny_family(self, fam: str, *, user_id: int, reason: str, actor: str | None) -> None:
        self.refresh_families.revoke(fam)
        lifetime = max(self.refresh_ttl, self.access_ttl) + self.leeway
        self.revocation.deny("fam", fam, user_id, time.time() + lifetime)
        self.am.hooks.trigger("tokens_revoked", user_id=user_id, family=fam, reason=reason, actor=actor)

    def logout(self, claims: dict[str, Any]) -> None:
        """Revoke this access token and its refresh family (one ``logout`` audit event)."""
        user_id = int(claims["sub"])
        self.revocation.deny("jti", claims["jti"], user_id, float(claims["exp"]) + self.leeway)
        self._deny_family(claims["fam"], user_id=user_id, reason="logout", actor=f"user:{user_id}")
        audit("logout", user_id=user_id)

    # -- user administration (each change revokes every token of the user) ----------------------
    def revoke_user_tokens(self, user_id: Any, actor: str | None = None, reason: str = "admin") -> dict[str, Any]:
        """Revoke every token of a user (token version bump)."""
        try:
            uid = int(user_id)
        except (TypeError, ValueError):
            raise NotFound(f"no user {user_id!r}") from None
        return self._revoked_all(uid, self.users.bump_version(uid), actor=actor, reason=reason)

    def set_active(self, user_id: int, active: bool, actor: str | None = None) -> dict[str, Any]:
        """Enable/disable a user; disabling revokes every token."""
        version = self.users.set_active(user_id, active)
        return self._revoked_all(user_id, version, actor=actor, reason="enabled" if active else "disabled")

    def set_roles(self, user_id: int, roles: list[str], actor: str | None = None) -> dict[str, Any]:
        """Change roles; tokens carrying the old roles are revoked."""
        return self._revoked_all(user_id, self.users.set_roles(user_id, roles), actor=actor, reason="roles_changed")

    def _user_changed(self, change: UserChange) -> None:
        """The user store's watcher: Redis gets the user's new state; a new user whose id has
        refresh families already was given a deleted user's id — those families are revoked."""
        self.revocation.user_changed(change)
        if change.created:
            for fam in self.refresh_families.live_of(change.user_id):
                self.revoke_family(fam, user_id=change.user_id, reason="user_id_reused", actor="keel")

    def _revoked_all(self, user_id: int, version: int, *, actor: str | None, reason: str) -> dict[str, Any]:
        audit(_ALL_REVOKED_EVENTS.get(reason, "tokens_revoked"), user_id=user_id, reason=reason, actor=actor)
        self.am.hooks.trigger("tokens_revoked", user_id=user_id, family=None, reason=reason, actor=actor)
        return {"user_id": user_id, "token_version": version, "revoked": True}
