"""The settings schema: every key Keel reads, its type, default and whether it is secret.

Managers and modules read settings only through this schema; a key not declared here is not a
setting. Adding a setting = adding one ``Setting`` line below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+\s*)?(second|minute|hour|day)s?\s*$")


def check_limit(value: str) -> str:
    """A rate limit ``"20/second;300/minute"`` (``"100/5 minutes"`` also accepted); counts and
    window multipliers are positive."""
    parts = [p for p in value.split(";") if p.strip()]
    matches = [_LIMIT_RE.match(p) for p in parts]
    if not parts or not all(m and int(m[1]) > 0 and (m[2] is None or int(m[2]) > 0) for m in matches):
        raise ValueError("a rate limit like '300/minute' or '20/second;300/minute' (positive numbers)")
    return value.strip()


@dataclass(frozen=True)
class Setting:
    key: str
    type: str  # str | int | float | bool | list | limit
    default: Any = None
    secret: bool = False
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


S = Setting

SETTINGS: tuple[Setting, ...] = (
    # --- application -----------------------------------------------------------------------
    S("APP_ENV", "str", "development", choices=("development", "test", "staging", "production"),
      help="staging behaves as production"),
    S("DEBUG", "bool", False, help="Flask debug mode; refused in production"),
    S("HOST", "str", "127.0.0.1", help="address the server listens on"),
    S("PORT", "int", 8080, minimum=1, maximum=65535, help="port the server listens on"),
    S("MAX_CONTENT_LENGTH", "int", 1024 * 1024, minimum=1, help="largest accepted body in bytes"),
    S("CORS_ORIGINS", "list", [], help="allowed browser origins; empty = same origin only"),
    S("TRUSTED_HOSTS", "list", [], help="Host header values served (e.g. api.example.com); required in production"),
    S("HSTS_SECONDS", "int", 0, minimum=0, help="Strict-Transport-Security max-age behind TLS; 0 = no header"),
    S("LOG_LEVEL", "str", "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), help="log level"),
    S("LOG_FORMAT", "str", None, choices=("json", "text"), help="default: json in production, text otherwise"),
    S("LOG_FILE", "str", None, help="also write logs to this size-rotated file"),
    S("SECRETS_DIR", "str", None, help="directory of secret files; default ./secrets then /run/secrets"),
    # --- data ------------------------------------------------------------------------------
    S("DATABASE_URL", "str", "sqlite:///var/keel.db", secret=True, help="sqlite:///…, postgresql://… (psycopg2) or oracle+oracledb://…"),
    S("DATABASE_READ_URL", "str", None, secret=True, help="a read replica for idempotent reads; default: DATABASE_URL"),
    S("DB_POOL_SIZE", "int", 5, minimum=1, help="pooled connections per process"),
    S("DB_MAX_OVERFLOW", "int", 10, minimum=0, help="connections beyond the pool size under load"),
    S("DB_POOL_TIMEOUT", "float", 5.0, minimum=0.1, help="seconds to wait for a pooled connection (then 503)"),
    S("DB_STATEMENT_TIMEOUT_MS", "int", 5000, minimum=0, help="longer statements are cancelled (503); 0 = no limit"),
    S("DB_CONNECT_TIMEOUT", "float", 3.0, minimum=0.1, help="seconds to open a database connection"),
    S("DB_READ_RETRIES", "int", 2, minimum=0, help="retries of idempotent reads after a transient connection error"),
    S("DB_AUTO_CREATE", "bool", True, help="create missing framework/module tables at start (else: flask db init)"),
    S("MONGODB_TIMEOUT", "float", 2.0, minimum=0.1, help="MongoDB connect/server-selection/socket timeout, seconds"),
    S("BREAKER_THRESHOLD", "int", 3, minimum=1, help="consecutive failures that open a dependency's circuit"),
    S("BREAKER_PROBE_INTERVAL", "float", 1.0, minimum=0.05, help="seconds between probes of an open circuit"),
    S("STATE_CACHE_TTL", "int", 300, minimum=1, help="seconds a state record stays in the Redis cache"),
    S("STATE_LOCAL_CACHE_TTL", "float", 30.0, minimum=0, help="seconds in the in-process cache; 0 disables it"),
    S("ORACLE_CLIENT_LIB", "str", None, help="Oracle Instant Client directory: enables thick mode"),
    S("MONGODB_URL", "str", None, secret=True, help="MongoDB URL (task comments go there when set)"),
    S("REDIS_URL", "str", None, secret=True, help="Redis URL; unset: an in-process stand-in (one process only)"),
    S("REDIS_KEY_PREFIX", "str", "keel:", help="prefix of every Redis key Keel writes"),
    S("REDIS_SOCKET_TIMEOUT", "float", 0.5, minimum=0.01, help="seconds a Redis call may take"),
    S("SOCKETIO_MESSAGE_QUEUE", "str", None, secret=True, help="Redis URL for Socket.IO emits; default REDIS_URL"),
    S("ENCRYPTION_KEYS", "list", None, secret=True, help="Fernet keys, newest first"),
    # --- vault -----------------------------------------------------------------------------
    S("VAULT_ADDR", "str", None, help="Vault (or OpenBao) address; unset: no Vault"),
    S("VAULT_TOKEN", "str", None, secret=True, help="Vault token (or use AppRole)"),
    S("VAULT_ROLE_ID", "str", None, help="AppRole role id"),
    S("VAULT_SECRET_ID", "str", None, secret=True, help="AppRole secret id"),
    S("VAULT_MOUNT", "str", "secret", help="KV v2 mount"),
    S("VAULT_PATH", "str", "keel/app", help="KV v2 path of the settings (a field per lower-case key)"),
    S("VAULT_CACHE_TTL", "int", 300, minimum=0, help="seconds Vault values are cached"),
    S("VAULT_TIMEOUT", "float", 2.0, minimum=0.1, help="seconds a Vault request may take"),
    # --- auth ------------------------------------------------------------------------------
    S("JWT_SECRET_KEY", "str", None, secret=True, help="HS256 key, ≥ 32 bytes (generated in development)"),
    S("JWT_ALGORITHM", "str", "HS256", choices=("HS256", "RS256", "ES256", "EdDSA"),
      help="RS256/ES256/EdDSA need JWT_KEYS"),
    S("JWT_ACCESS_TTL", "int", 900, minimum=1, help="access token lifetime, seconds"),
    S("JWT_REFRESH_TTL", "int", 14 * 24 * 3600, minimum=1, help="refresh token lifetime, seconds"),
    S("JWT_ISSUER", "str", "keel", help="iss claim issued and required"),
    S("JWT_AUDIENCE", "str", "keel", help="aud claim issued and required"),
    S("API_KEY_PEPPER", "str", None, secret=True, help="HMAC key of stored API-key hashes (generated in development)"),
    S("AUTH_REGISTRATION_OPEN", "bool", True, help="false closes POST /auth/register"),
    S("JWT_MAX_TTL", "int", 30 * 24 * 3600, minimum=1, help="tokens whose exp - iat exceeds this are rejected"),
    S("JWT_LEEWAY", "int", 10, minimum=0, maximum=30, help="clock skew allowed on exp/nbf/iat, at most 30 s"),
    S("JWT_KEYS", "str", None, secret=True, help="JWK set (JSON or a file path): signing + old keys, kid rotation"),
    S("JWT_KEY_ID", "str", None, help="kid of the signing key in JWT_KEYS (default: the first private key)"),
    S("JWT_KEY_GRACE", "int", 14 * 24 * 3600, minimum=0, help="seconds a retired JWK ('retired_at') still verifies"),
    S("API_KEY_CACHE_TTL", "float", 5.0, minimum=0, help="seconds a verified API key record is cached in-process"),
    S("API_KEYS_PER_USER", "int", 20, minimum=1, help="live (not revoked, not expired) API keys a user may hold"),
    S("AUTH_DEVICE_TTL", "int", 30 * 24 * 3600, minimum=0,
      help="seconds a login's device token counts that device's logins apart from the username's; 0 = none issued"),
    # --- actions and modules ---------------------------------------------------------------
    S("ACTIONS_DIR", "str", "actions", help="directory of action YAML files"),
    S("ACTIONS_RELOAD_INTERVAL", "float", 1.0, minimum=0, help="seconds between checks for changed files; 0 = off"),
    S("MODULES_DIR", "str", "modules", help="directory of plugin modules"),
    S("MODULES_DISABLED", "list", [], help="module names not to load"),
    # --- rate limits and bans --------------------------------------------------------------
    S("RATE_LIMIT_IP", "limit", "300/minute", help="requests per client IP, on every route but the probes"),
    S("RATE_LIMIT_USER", "limit", "1000/minute", help="requests per user: their tokens and the API keys they own"),
    S("RATE_LIMIT_API_KEY", "limit", "5000/minute", help="requests per API key"),
    S("RATE_LIMIT_FAIL_MODE", "str", "open", choices=("open", "closed"),
      help="Redis down: open = limits per process; closed = 503"),
    S("RATE_LIMIT_LOGIN", "limit", "10/minute;50/hour", help="login attempts per IP and per username or device"),
    S("RATE_LIMIT_API_KEY_CREATE", "limit", "5/minute;30/day", help="API keys a user may create (POST /auth/api-keys)"),
    S("RATE_LIMIT_REDIS_TIMEOUT", "float", 0.1, minimum=0.005, help="socket timeout of the limiter's Redis calls"),
    S("BAN_AFTER_VIOLATIONS", "int", 5, minimum=1, help="refused requests within BAN_WINDOW that ban the identity"),
    S("BAN_WINDOW", "int", 300, minimum=1, help="seconds in which violations are counted"),
    S("BAN_DURATION", "int", 3600, minimum=1, help="seconds of a first ban; each repeat doubles it, up to 24 h"),
    S("TRUSTED_PROXY_COUNT", "int", 0, minimum=0, maximum=16,
      help="proxies in front that write X-Forwarded-For; 0 = the socket peer is the client"),
    S("BAN_EXEMPT_NETWORKS", "list", None,
      help="client networks (CIDR) never rate limited or banned; default: 127.0.0.0/8,::1 in development "
      "and test, none elsewhere"),
    # --- websocket -------------------------------------------------------------------------
    S("WS_AUTO_CREATE_ROOMS", "bool", True, help="join_room on an unknown room creates it, public; false: not_found"),
    S("WS_MESSAGE_RATE", "limit", "20/second", help="Socket.IO events per connection; violations count toward bans"),
    S(
        "WS_LONG_POLLING",
        "bool",
        False,
        help="also accept Socket.IO's HTTP long-polling: needs one worker per instance and sticky sessions",
    ),
    S(
        "WS_PRESENCE_TTL",
        "int",
        15,
        minimum=3,
        maximum=25,
        help="seconds without a heartbeat after which a dead process's room members are removed",
    ),
    # --- admin page ------------------------------------------------------------------------
    S("ADMIN_SESSION_KEY", "str", None, secret=True,
      help="signs /admin session cookies, ≥ 32 bytes (generated in development); unset in production: /admin off"),
    S("ADMIN_SESSION_TTL", "int", 1800, minimum=60, maximum=86400, help="seconds an /admin sign-in lasts"),
)

# Settings whose value, when no source has one, is generated in development/test.
GENERATED = {"JWT_SECRET_KEY", "API_KEY_PEPPER", "ENCRYPTION_KEYS", "ADMIN_SESSION_KEY"}

# Read from the environment only: they locate the other sources.
BOOTSTRAP = {"SECRETS_DIR"}


BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
