"""VaultManager: secrets from Vault KV v2 (SPEC §2), cached, renewed, never blocking a request.

At start, :meth:`VaultManager.settings_source` logs in (``VAULT_TOKEN``, or AppRole with
``VAULT_ROLE_ID`` + ``VAULT_SECRET_ID``) and reads ``VAULT_MOUNT``/``VAULT_PATH`` once — one
read serves every field — so that :func:`config.load_settings` resolves settings from it. The
running manager adopts that source (same client, same cache) and keeps it fresh from a daemon
thread: the token is renewed before it expires (AppRole logs in again when it cannot be), the
values are re-read every ``VAULT_CACHE_TTL`` seconds, and ``secret_changed`` is fired for every
field whose value changed. ``am.vault.get(key)`` only ever reads the cache.

When Vault is unreachable, sealed, answers 403 or is slow (requests time out after
``VAULT_TIMEOUT`` ≤ 2 s), the last values read are served (or, before any read succeeded, the
settings fall through to the next source), one warning per failure class per minute is logged
(never a value) and :meth:`health` reports ``degraded``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask

# hvac and requests (~6 MiB per process) are imported by the functions that use them: only a
# process with VAULT_ADDR set builds a VaultSource, and only it loads them.
from core.breaker import CircuitBreaker, CircuitOpen
from core.errors import ConfigError
from core.managers.base import Manager

if TYPE_CHECKING:
    from core.app_manager import AppManager


logger = logging.getLogger(__name__)

MAX_TIMEOUT = 2.0  # SPEC §2: no Vault request waits longer than this
WARN_EVERY = 60.0  # one warning per failure class per minute
RETRY_EVERY = 1.0  # after a failure, probe again this often
PROBE_EVERY = 5.0  # while all is well, check that Vault still answers (so /health turns within 15 s)
_HEALTHY_STATUS = frozenset({200, 429, 472, 473})  # active, standby, DR/performance secondary
TICK = 0.25  # the background thread's clock
BOOTSTRAP_KEY = "keel.vault_bootstrap"  # app.extensions slot create_app hands the source over in


class VaultFailure(Exception):
    """A Vault call failed; ``kind`` is the failure class (unreachable, timeout, sealed, forbidden, error)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def classify(exc: BaseException) -> str:
    """The failure class of an exception raised by hvac/requests."""
    import hvac.exceptions
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "unreachable"
    if isinstance(exc, hvac.exceptions.VaultDown | hvac.exceptions.VaultNotInitialized):
        return "sealed"
    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return "forbidden"
    return "error"


class WarnLimiter:
    """Lets one warning per failure class through per ``every`` seconds."""

    def __init__(self, every: float = WARN_EVERY) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, kind: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every:
                return False
            self._last[kind] = now
            return True


class VaultSource:
    """One Vault client, its login state and the cached KV v2 values.

    Implements the ``config.SecretSource`` protocol (``get(key) -> str | None``). Every public
    method that talks to Vault catches the failure, records its class and never raises.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        import hvac.exceptions
        import requests

        self.addr: str = settings["VAULT_ADDR"]
        self.mount: str = settings["VAULT_MOUNT"]
        self.path: str = settings["VAULT_PATH"]
        self.ttl = float(settings["VAULT_CACHE_TTL"])
        self.timeout = min(float(settings["VAULT_TIMEOUT"]), MAX_TIMEOUT)
        self._token: str | None = settings["VAULT_TOKEN"] or None
        self._role_id: str | None = settings["VAULT_ROLE_ID"] or None
        self._secret_id: str | None = settings["VAULT_SECRET_ID"] or None
        if self._token is None and not (self._role_id and self._secret_id):
            raise ConfigError(
                "VAULT_ADDR is set but Vault has no credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and "
                "VAULT_SECRET_ID for AppRole"
            )
        self.auth_method = "token" if self._token is not None else "approle"
        # token=None would make hvac read VAULT_TOKEN/~/.vault-token itself: pass "" instead.
        self.client = hvac.Client(url=self.addr, token=self._token or "", timeout=self.timeout)
        self.data: dict[str, str] | None = None  # None: never read successfully
        self.read_at: float | None = None  # monotonic time of the last successful read
        self.attempt_at: float | None = None  # monotonic time of the last read attempt
        self.probed_at: float | None = None  # monotonic time of the last reachability probe
        self.failure: str | None = None  # failure class of the last call, None when it worked
        self.token_expires_at: float | None = None  # monotonic; None = unknown
        self.token_ttl: float | None = None  # the token's TTL when obtained or renewed (0 = none)
        self.token_renewable = False
        self.renew_failed_at: float | None = None  # monotonic; renewal is retried RETRY_EVERY later
        self._logged_in = False
        self.warnings = WarnLimiter()
        self.lock = threading.Lock()
        # Vault being down (network, timeout, sealed, 5xx) opens the circuit: no call is made
        # until the next probe, a second later. A 403 or 404 is an answer, not an outage.
        self.breaker = CircuitBreaker(
            "vault",
            failures=(
                requests.exceptions.RequestException,
                hvac.exceptions.VaultDown,
                hvac.exceptions.VaultNotInitialized,
                hvac.exceptions.InternalServerError,
                hvac.exceptions.BadGateway,
            ),
            threshold=1,
            probe_interval=RETRY_EVERY,
        )

    # -- the SecretSource protocol --------------------------------------------------------------
    def get(self, key: str) -> str | None:
        data = self.data
        if data is None:
            return None
        return data.get(key.lower())

    # -- calls to Vault ------------------------------------------------------------------------
    def _fail(self, exc: BaseException, during: str) -> VaultFailure:
        kind = classify(exc)
        self.failure = kind
        try:
            from core.metrics import VAULT_FALLBACK

            VAULT_FALLBACK.inc()
        except ImportError:  # metrics are optional in a trimmed build
            pass
        if self.warnings.allow(kind):
            fallback = "serving cached values" if self.data is not None else "falling through to the next source"
            # The exception type only: hvac messages may echo request data.
            logger.warning("vault %s during %s (%s); %s", kind, during, type(exc).__name__, fallback)
        return VaultFailure(kind, type(exc).__name__)

    def _login(self) -> None:
        """AppRole: obtain a token. Token auth: nothing to do (the token is checked on use)."""
        if self.auth_method == "approle":
            result = self.client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
            self._note_token(result.get("auth") or {})
        self._logged_in = True

    def _note_token(self, auth: Mapping[str, Any]) -> None:
        ttl = float(auth.get("lease_duration") or auth.get("ttl") or 0)
        self.token_ttl = ttl
        self.token_renewable = bool(auth.get("renewable"))
        self.token_expires_at = time.monotonic() + ttl if ttl > 0 else None

    def read(self) -> list[str] | None:
        """Read every field once; returns the changed field names, or ``None`` on failure."""
        import hvac.exceptions
        import requests

        with self.lock:
            self.attempt_at = time.monotonic()
            try:
                with self.breaker:
                    if not self._logged_in:
                        self._login()
                    response = self.client.secrets.kv.v2.read_secret_version(
                        path=self.path, mount_point=self.mount, raise_on_deleted_version=True
                    )
                raw = (response.get("data") or {}).get("data") or {}
            except CircuitOpen:
                return None  # known down: the last failure class stands, no new call
            except hvac.exceptions.InvalidPath:
                # Vault answers but has no secret at this path: nothing to serve, nothing broken.
                if self.warnings.allow("not_found"):
                    logger.warning("vault has no secret at %s/%s; no setting comes from Vault", self.mount, self.path)
                raw = {}
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                if isinstance(exc, hvac.exceptions.Forbidden) and self.auth_method == "approle":
                    self._logged_in = False  # the token expired or was revoked: log in again next time
                self._fail(exc, "read")
                return None
            new = {str(k).lower(): ("" if v is None else str(v)) for k, v in raw.items()}
            old = self.data or {}
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            self.data = new
            self.read_at = time.monotonic()
            self.failure = None
            return changed

    def probe(self) -> None:
        """Is Vault still reachable and unsealed? ``HEAD /v1/sys/health`` (no token, no secret,
        no body): cheap enough to run every few seconds. A failure is recorded like a failed
        read (``/health`` degraded, the cached values still served, reads retried each second);
        an answer changes nothing — only a successful read clears a failure."""
        import hvac.exceptions
        import requests

        with self.lock:
            self.probed_at = time.monotonic()
            try:
                with self.breaker:
                    response = self.client.sys.read_health_status(method="HEAD")
                    status = getattr(response, "status_code", 200)
                    if status not in _HEALTHY_STATUS:
                        raise hvac.exceptions.VaultDown(f"sys/health answered {status}")
            except CircuitOpen:
                return
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                self._fail(exc, "health probe")

    def renew(self) -> bool:
        """Renew the token when it is due (two thirds of its TTL used); log in again if it cannot be."""
        import hvac.exceptions
        import requests

        with self.lock:
            if self.renew_failed_at is not None and time.monotonic() - self.renew_failed_at < RETRY_EVERY:
                return False
            self.renew_failed_at = None
            if self.breaker.is_open:
                return False  # read() probes; renewal waits until Vault answers again
            try:
                if self._renewal_due():
                    self._renew_token()
                return True
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                if isinstance(exc, self.breaker.failures):
                    self.breaker.failure(exc)
                self.renew_failed_at = time.monotonic()
                if isinstance(exc, hvac.exceptions.Forbidden) and self.auth_method == "approle":
                    self._logged_in = False
                self._fail(exc, "token renewal")
                return False

    def _renewal_due(self) -> bool:
        """Whether two thirds of the token's TTL are used (its TTL is looked up once)."""
        if self.token_ttl is None:
            if not self._logged_in:
                return False  # read() logs in first
            self._note_token(self.client.auth.token.lookup_self()["data"])
        if self.token_expires_at is None or self.token_ttl in (None, 0):
            return False
        return self.token_expires_at - time.monotonic() <= (self.token_ttl or 0) / 3

    def _renew_token(self) -> None:
        """Renew a renewable token; AppRole logs in again when renewal cannot extend it."""
        import hvac.exceptions

        if self.token_renewable:
            previous_ttl = self.token_ttl or 0
            try:
                self._note_token(self.client.auth.token.renew_self()["auth"])
                if (self.token_ttl or 0) >= previous_ttl / 2 or self.auth_method != "approle":
                    logger.info("vault token renewed (ttl %ss)", int(self.token_ttl or 0))
                    return
                # Capped by the token's max TTL: AppRole gets a fresh token below.
            except hvac.exceptions.VaultError:
                if self.auth_method != "approle":
                    raise
        if self.auth_method == "approle":
            self._login()
            logger.info("vault AppRole login renewed the token (ttl %ss)", int(self.token_ttl or 0))
        else:
            self.token_expires_at = None  # not renewable: nothing more we can do; reads will tell

    def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        self.client.adapter.close()

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"auth": self.auth_method, "circuit": self.breaker.state}
        if self.read_at is not None:
            report["cache_age_s"] = round(time.monotonic() - self.read_at, 1)
        if self.failure is None and self.data is not None:
            report["status"] = "healthy"
            return report
        report["status"] = "degraded"
        report["fallback"] = "cache" if self.data is not None else "next_source"
        report["error"] = self.failure or "not_read"
        return report


class VaultManager(Manager):
    """``am.vault``: the running side of the Vault source (absent values when ``VAULT_ADDR`` is unset)."""

    name: ClassVar[str] = "vault"

    am: AppManager

    def __init__(self) -> None:
        self.source: VaultSource | None = None  # None: VAULT_ADDR is unset
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def settings_source(cls, partial_settings: Mapping[str, Any]) -> VaultSource:
        """Log in and read once, for :func:`config.load_settings` (never raises on Vault failures)."""
        source = VaultSource(partial_settings)
        source.read()
        return source

    def init_app(self, app: Flask, am: AppManager) -> None:
        super().init_app(app, am)
        self.am = am
        source = app.extensions.pop(BOOTSTRAP_KEY, None)
        if am.settings["VAULT_ADDR"]:
            # Adopt the source create_app read the settings from; built outside create_app,
            # a new one (no network here: start() reads it).
            self.source = source if source is not None else VaultSource(am.settings)
        elif source is not None:
            source.close()

    def start(self) -> None:
        """Read once if nothing was read yet, then renew the token and refresh the cache in
        the background."""
        if self.source is None or self._thread is not None:
            return
        if self.source.attempt_at is None:
            self.source.read()  # the first values: nothing "changed" yet
        self._thread = threading.Thread(target=self._run, args=(self.source,), name="keel-vault", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def get(self, key: str) -> str | None:
        """The cached value of field ``key`` (case-insensitive); never waits on Vault."""
        return self.source.get(key) if self.source is not None else None

    def refresh(self) -> list[str] | None:
        """Read now; fire ``secret_changed`` for each changed field. ``None`` when the read failed."""
        if self.source is None:
            return None
        changed = self.source.read()
        if changed:
            logger.info("vault values changed: %s", ", ".join(changed))
            for key in changed:
                self.am.hooks.trigger("secret_changed", key=key, source="vault")
        return changed

    @staticmethod
    def _due(source: VaultSource, now: float) -> bool:
        if source.attempt_at is None:
            return True
        if source.failure is not None or source.data is None:
            return now - source.attempt_at >= RETRY_EVERY
        return source.read_at is None or now - source.read_at >= source.ttl

    def _run(self, source: VaultSource) -> None:
        while not self._stop.wait(TICK):
            try:
                source.renew()
                now = time.monotonic()
                if self._due(source, now):
                    self.refresh()
                elif source.failure is None and now - (source.probed_at or source.read_at or now) >= PROBE_EVERY:
                    source.probe()
            except Exception:
                # The refresher must outlive any surprise (a hook, a malformed answer): the
                # cached values keep being served and the next tick tries again.
                logger.exception("vault refresher: unexpected error")

    def health(self) -> dict[str, Any]:
        if self.source is None:
            return {"status": "healthy", "enabled": False}
        return self.source.health()

    def dispose(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(MAX_TIMEOUT * 2)
        self._thread = None
        if self.source is not None:
            self.source.close()
