"""Settings: resolved from secret files, Vault, the environment and defaults (SPEC §2).

``load_settings()`` resolves every key of :mod:`config.schema` from the first source that has
it, records the source, converts and validates the value, and raises :class:`ConfigError`
naming the key, the source and what was expected. Secret settings look in Vault first when
``VAULT_ADDR`` is set (Vault is the production source of record).
"""

from __future__ import annotations

import base64
import os
import secrets as _secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from config.schema import BOOTSTRAP, BY_KEY, GENERATED, SETTINGS, Setting, check_limit

PRODUCTION_ENVS = {"production", "staging"}
# Generated development secrets carry a mark in their value, so that they are recognised (and
# refused in production/staging) wherever they are read from: the secret file `make run`
# wrote, an env var or Vault they were copied to. Fernet keys have no room for text: their
# first key bytes are the mark (the remaining 24 random bytes are ample for development).
GENERATED_MARK = "keel-dev-generated-"
_FERNET_MARK = b"KEEL-DEV"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SecretSource(Protocol):
    """A remote secret store (Vault). ``get`` returns ``None`` when it has no value."""

    def get(self, key: str) -> str | None: ...


class Settings(Mapping[str, Any]):
    """Immutable typed settings with the source of every value."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]) -> None:
        self._values = values
        self._sources = sources

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def source(self, key: str) -> str:
        return self._sources[key]

    @property
    def is_production(self) -> bool:
        return self._values["APP_ENV"] in PRODUCTION_ENVS

    def redacted(self) -> list[tuple[str, str, str]]:
        """``(key, source, shown value)`` rows with secrets masked, for ``flask config show``."""
        rows = []
        for key in self._values:
            value = self._values[key]
            setting = BY_KEY.get(key)
            if value is None:
                shown = ""
            elif setting is not None and setting.secret:
                shown = "********"
            elif isinstance(value, list):
                shown = ",".join(str(v) for v in value)
            else:
                shown = str(value)
            rows.append((key, self._sources[key], shown))
        return rows


def secret_dirs(env: Mapping[str, str]) -> list[Path]:
    configured = env.get("SECRETS_DIR")
    if configured:
        return [Path(configured)]
    return [Path("secrets"), Path("/run/secrets")]


def _read_secret_file(dirs: list[Path], key: str) -> tuple[str, str] | None:
    for d in dirs:
        path = d / key.lower()
        try:
            if path.is_file():
                return path.read_text(encoding="utf-8").rstrip("\r\n"), f"file:{path}"
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}: cannot read secret file {path}: {exc}") from exc
    return None


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("a boolean (true/false/1/0)")


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("an integer")
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ValueError("an integer") from None


def _to_float(raw: Any) -> float:
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ValueError("a number") from None


def _to_list(raw: Any) -> list[str]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "list": _to_list,
    "limit": lambda raw: check_limit(str(raw)),
    "str": str,
}


def coerce(setting: Setting, raw: Any) -> Any:
    """Convert a raw value (string from a file/env, or a Python value) to the setting's type."""
    if raw is None:
        return None
    value = _CONVERT.get(setting.type, str)(raw)
    if setting.type == "bool":
        return value
    wrong = _out_of_range(setting, value)
    if wrong:
        raise ValueError(wrong)
    if setting.choices and value not in setting.choices:
        raise ValueError("one of " + ", ".join(setting.choices))
    return value


def _out_of_range(setting: Setting, value: Any) -> str | None:
    """What was expected when ``value`` is outside the setting's range, else ``None``."""
    low, high = setting.minimum, setting.maximum
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    if high is None:
        return f"a value >= {low:g}"
    if low is None:
        return f"a value <= {high:g}"
    return f"a value from {low:g} to {high:g}"


class _Resolver:
    """Finds each setting's raw value in the first source that has it (SPEC §2 order)."""

    def __init__(self, overrides: dict[str, Any], env: Mapping[str, str], dirs: list[Path]) -> None:
        self.overrides, self.env, self.dirs = overrides, env, dirs
        self.vault: SecretSource | None = None
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def _from_vault(self, key: str) -> tuple[str, str] | None:
        value = None if self.vault is None else self.vault.get(key.lower())
        return None if value is None else (value, "vault")

    def _find(self, setting: Setting, with_vault: bool) -> tuple[Any, str] | None:
        key = setting.key
        if key in self.overrides:
            return self.overrides[key], "override"
        finders: list[Callable[[], tuple[Any, str] | None]] = []
        if key not in BOOTSTRAP:
            vault = [lambda: self._from_vault(key)] if with_vault and self.vault is not None else []
            # Secrets: Vault is the source of record; other settings: files first.
            finders += (
                [*vault, lambda: _read_secret_file(self.dirs, key)]
                if setting.secret
                else [
                    lambda: _read_secret_file(self.dirs, key),
                    *vault,
                ]
            )
        finders.append(lambda: (self.env[key], "env") if key in self.env else None)
        for finder in finders:
            found = finder()
            if found is not None:
                return found
        return None

    def resolve(self, setting: Setting, with_vault: bool) -> None:
        key = setting.key
        found = self._find(setting, with_vault)
        if found is None:
            self.values[key], self.sources[key] = setting.default, "default"
            return
        raw, source = found
        try:
            self.values[key] = coerce(setting, raw)
        except ValueError as exc:
            shown = "<redacted>" if setting.secret else repr(raw)
            raise ConfigError(f"{key} from {source}: expected {exc}, got {shown}") from None
        self.sources[key] = source


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    vault_factory: Any = None,
) -> Settings:
    """Resolve every setting. ``overrides`` (tests, embedding) win over every source.

    ``vault_factory(partial_settings) -> SecretSource`` builds the Vault source once the
    settings that locate Vault are known; it is only called when ``VAULT_ADDR`` is set.
    """
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(BY_KEY))
    if unknown:
        raise ConfigError(f"unknown setting(s) in overrides: {', '.join(unknown)}")
    dirs = secret_dirs({**env, **{k: str(v) for k, v in overrides.items() if k in BOOTSTRAP and v}})
    resolver = _Resolver(overrides, env, dirs)
    # Pass 1: everything without Vault, so that VAULT_* themselves are known.
    for setting in SETTINGS:
        resolver.resolve(setting, with_vault=False)
    values, sources = resolver.values, resolver.sources
    if values.get("VAULT_ADDR") and vault_factory is not None:
        resolver.vault = vault_factory(Settings(dict(values), dict(sources)))
        for setting in SETTINGS:
            if not setting.key.startswith("VAULT_"):
                resolver.resolve(setting, with_vault=True)

    if values["LOG_FORMAT"] is None:
        values["LOG_FORMAT"] = "json" if values["APP_ENV"] in PRODUCTION_ENVS else "text"
    _generate_missing(values, sources, dirs)
    missing = [s.key for s in SETTINGS if s.required and values.get(s.key) in (None, "", [])]
    if missing:
        tried = "override, secret files (" + ", ".join(str(d) for d in dirs) + "), "
        tried += "vault, env" if resolver.vault is not None else "env"
        raise ConfigError(f"required setting(s) {', '.join(missing)} not set; sources tried: {tried}")
    settings = Settings(values, sources)
    check_production(settings)
    return settings


def _generate_missing(values: dict[str, Any], sources: dict[str, str], dirs: list[Path]) -> None:
    """Development: generate missing keys once into the first secrets dir. Test: in memory.

    Production never generates (``check_production`` then refuses to start).
    """
    env = values["APP_ENV"]
    if env in PRODUCTION_ENVS:
        return
    for key in sorted(GENERATED):
        if values.get(key):
            continue
        raw = generate_secret(key)
        source = "generated"
        if env == "development":
            path = dirs[0] / key.lower()
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                # Another worker generated it first (or the file is empty): use what is there.
                existing = path.read_text(encoding="utf-8").strip()
                if not existing:
                    raise ConfigError(f"{key}: secret file {path} is empty; delete it or write a value") from None
                raw = existing
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(raw + "\n")
            source = f"generated:{path}"
        values[key] = coerce(BY_KEY[key], raw)
        sources[key] = source


def generate_secret(key: str) -> str:
    """A new development value for one of the ``GENERATED`` settings, marked as generated."""
    if key == "ENCRYPTION_KEYS":
        return base64.urlsafe_b64encode(_FERNET_MARK + os.urandom(32 - len(_FERNET_MARK))).decode()
    return GENERATED_MARK + _secrets.token_urlsafe(48)


def is_generated(value: Any) -> bool:
    """True when ``value`` (a string, or a list of keys) was made by :func:`generate_secret`."""
    if isinstance(value, list | tuple):
        return any(is_generated(v) for v in value)
    if not isinstance(value, str):
        return False
    if value.startswith(GENERATED_MARK):
        return True
    try:
        return base64.urlsafe_b64decode(value.encode()).startswith(_FERNET_MARK)
    except (ValueError, TypeError):
        return False


def check_production(settings: Settings) -> None:
    """Refuse unsafe production settings (SPEC §2)."""
    if not settings.is_production:
        return
    problems = []
    src = settings.source("JWT_SECRET_KEY")
    key = settings["JWT_SECRET_KEY"]
    if settings["JWT_KEYS"]:
        pass  # a JWK set (checked by the JWT manager: private signing key, kid, HS256 ≥ 32 bytes) replaces it
    elif key is None or src.startswith("generated") or src == "default":
        problems.append("JWT_SECRET_KEY is not set (generated/default keys are for development only)")
    elif is_generated(key):
        problems.append(f"JWT_SECRET_KEY from {src} is a development key generated by Keel; set a real one")
    elif settings["JWT_ALGORITHM"] == "HS256" and len(key.encode()) < 32:
        problems.append("JWT_SECRET_KEY is shorter than 32 bytes; HS256 needs at least 32")
    if not settings["TRUSTED_HOSTS"]:
        problems.append("TRUSTED_HOSTS is not set; list the host names this deployment answers to")
    if "*" in settings["CORS_ORIGINS"]:
        problems.append("CORS_ORIGINS=* is not allowed in production; list the origins")
    if settings["DEBUG"]:
        problems.append("DEBUG must be off in production")
    if not settings["API_KEY_PEPPER"]:
        problems.append("API_KEY_PEPPER is not set")
    for generated in sorted(GENERATED - {"JWT_SECRET_KEY"}):
        if is_generated(settings[generated]):
            problems.append(
                f"{generated} from {settings.source(generated)} is a development key generated by Keel; set a real one"
            )
    if problems:
        raise ConfigError(f"refusing to start with APP_ENV={settings['APP_ENV']}: " + "; ".join(problems))


# Imported last: ``core`` imports ``config`` (Settings, load_settings) while it initializes, so
# ``import config`` before ``import core`` must have defined those names by the time it gets here.
from core.errors import ConfigError  # noqa: E402

__all__ = ["ConfigError", "SecretSource", "Settings", "coerce", "generate_secret", "is_generated", "load_settings"]
