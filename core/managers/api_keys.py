"""ApiKeyManager: ``keel_<id>_<secret>`` API keys with scopes and expiry (SPEC §6).

The facade a reader finds first; the key store (hashing with ``API_KEY_PEPPER``, the record
cache, batched last-used times) is :mod:`core.auth.api_keys`, and a revoked key's mark for the
other workers (``auth:deny:key:<id>``) and its owner's state (``auth:ver:<owner id>``), read by
the request guard with its other Redis keys, live in the deny-list shared with JWTs,
:mod:`core.auth.revocation` (``am.jwt.revocation``). A key whose owner is disabled or deleted
is refused; a user's change in this process drops that owner's cached key records at once.
Keys are accepted from the ``X-API-Key`` header only and never logged.

A key acts for its owner (SPEC §6): its principal carries the owner's current roles (checked by
:mod:`core.auth.policy`) and shares the owner's limits (:mod:`core.managers.rate_limit`). A key
may hold only scopes that some endpoint declares (an action's YAML, a ``@protect``-ed route),
and a user at most ``API_KEYS_PER_USER`` live keys.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask, current_app, has_app_context

from core.auth.api_keys import ApiKeyRecord, ApiKeyStore
from core.auth.revocation import user_state
from core.errors import ConfigError, NotFound, Unauthorized
from core.managers.base import Manager

if TYPE_CHECKING:
    import sqlalchemy as sa

    from core.app_manager import AppManager
    from core.auth.identity import Principal
    from core.auth.users import UserChange

logger = logging.getLogger(__name__)
audit = logging.getLogger("keel.audit")


class ApiKeyManager(Manager):
    name: ClassVar[str] = "api_keys"

    # -- lifecycle ----------------------------------------------------------------------------
    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am
        pepper = am.settings["API_KEY_PEPPER"]
        if not pepper or len(pepper.encode()) < 16:
            raise ConfigError(
                f"API_KEY_PEPPER from {am.settings.source('API_KEY_PEPPER')}: expected at least 16 bytes of secret"
            )
        self.store = ApiKeyStore(am.db, pepper.encode(), float(am.settings["API_KEY_CACHE_TTL"]))
        self.per_user = int(am.settings["API_KEYS_PER_USER"])
        am.jwt.users.watch(self._owner_changed)

    def dispose(self) -> None:
        try:
            self.store.flush_last_used()
        except Exception:
            # Shutdown must go on; losing a few last-used times is harmless.
            logger.exception("flushing API key last-used times at shutdown failed")

    @property
    def table(self) -> sa.Table:
        return self.store.table

    # -- authentication -----------------------------------------------------------------------
    def authenticate(self, presented: Any) -> Principal:
        """The principal of a valid key, else :class:`Unauthorized` (one generic message)."""
        return self.store.authenticate(presented)

    def revocation_keys(self, principal: Principal) -> list[str]:
        """The Redis keys deciding whether ``principal``'s key is refused (for the limiter's
        single round trip), in the order :meth:`check_revocation` expects their values."""
        return self.am.jwt.revocation.api_key_keys(principal.id, principal.owner_id)

    def check_revocation(self, principal: Principal, values: list[Any] | None = None) -> Principal:
        """The principal to serve: ``principal``, or the one of the key's record read again
        when its owner changed since it was cached (their roles, say); raise
        :class:`Unauthorized` if the key was revoked by another worker within the cache TTL
        (its Redis mark) or its owner is disabled or deleted (the owner's state). ``values``
        were read for :meth:`revocation_keys` (``None``: read them here). Without Redis the
        cached record decides (``API_KEY_CACHE_TTL``)."""
        revocation = self.am.jwt.revocation
        if values is None:
            values = revocation.read(self.revocation_keys(principal))
        if values is None:
            return principal
        if values[0] is not None:
            self.store.invalidate(principal.id)
            raise Unauthorized()
        if len(values) < 2:
            return principal  # a key without an owner
        state = values[1]
        if state is not None and int(state) == principal.claims["owner_ver"]:
            return principal  # the owner as the record was cached with
        if state is not None and int(state) < 0:
            self.store.invalidate(principal.id)
            raise Unauthorized()  # the owner is disabled or deleted
        # The owner changed since the record was cached, or Redis holds no state for them:
        # the database decides (and Redis learns the owner's state).
        record = self.store.reload(principal.id)
        if state is None and record is not None and record.owner_id is not None:
            owner = record.owner_version
            revocation.learn_user(record.owner_id, None if owner is None else user_state(owner, record.owner_active))
        if record is None or not record.usable(time.time()):
            raise Unauthorized()
        return record.principal()

    def _owner_changed(self, change: UserChange) -> None:
        """A user changed in this process: forget their cached key records; a new user's id
        with keys already recorded was reused — those keys were the deleted user's."""
        self.store.forget_owner(change.user_id)
        if change.created:
            for key_id in self.store.revoke_owned(change.user_id):
                self.am.jwt.revocation.deny_api_key(key_id)
                audit.warning(
                    "api key of a deleted user revoked: its id was reused",
                    extra={"api_key_id": key_id, "user_id": change.user_id},
                )

    def invalidate(self, key_id: str) -> None:
        """Forget this process's cached record of the key."""
        self.store.invalidate(key_id)

    def flush_last_used(self) -> None:
        """Write the batched last-used times now."""
        self.store.flush_last_used()

    # -- management ---------------------------------------------------------------------------
    def create(
        self, name: Any, scopes: Any, *, owner_id: int | None, expires_in_days: Any = None, actor: str | None = None
    ) -> dict[str, Any]:
        """Create a key; the result holds the full key (shown once) and the public record.

        400 for a scope no endpoint declares; 409 when the owner already holds
        ``API_KEYS_PER_USER`` live keys."""
        key, record = self.store.create(
            name,
            scopes,
            owner_id=owner_id,
            expires_in_days=expires_in_days,
            known_scopes=self.known_scopes(),
            max_live=self.per_user,
        )
        audit.info("api key created", extra={"api_key_id": record.id, "owner_id": owner_id, "actor": actor})
        self.am.hooks.trigger("api_key_created", api_key=record.public(), actor=actor)
        return {"key": key, "api_key": record.public()}

    def known_scopes(self) -> frozenset[str]:
        """Every scope an endpoint declares: the loaded actions' and, within an app context
        (a request, the CLI), the ``@protect``-ed routes' (whose view carries its declaration
        for OpenAPI)."""
        scopes = {s for action in self.am.actions.registry.actions.values() for s in action.requirement.scopes}
        views = current_app.view_functions.values() if has_app_context() else ()
        for view in views:
            spec = getattr(getattr(view, "__keel_openapi__", None), "spec", None)
            scopes.update(getattr(spec, "scopes", ()))
        return frozenset(scopes)

    def list(self, owner_id: int | None = None, *, all_owners: bool = False) -> list[dict[str, Any]]:
        return [r.public() for r in self.store.list(owner_id, all_owners=all_owners)]

    def get(self, key_id: str) -> ApiKeyRecord | None:
        return self.store.get(key_id)

    def revoke(
        self, key_id: str, *, owner_id: int | None = None, admin: bool = False, actor: str | None = None
    ) -> None:
        """Revoke a key. A non-admin may only revoke their own (others look like NotFound)."""
        record = self.store.get(key_id)
        if record is None or (not admin and record.owner_id != owner_id):
            raise NotFound("No such API key.")
        self.store.revoke(key_id)
        self.am.jwt.revocation.deny_api_key(key_id)
        audit.info("api key revoked", extra={"api_key_id": key_id, "actor": actor})
        self.am.hooks.trigger("api_key_revoked", api_key_id=key_id, owner_id=record.owner_id, actor=actor)
