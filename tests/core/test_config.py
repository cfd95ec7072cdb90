"""Settings (SPEC §2): priority and provenance, typed validation, production refusals, CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import config
from config import load_settings
from config.schema import Setting
from core.errors import ConfigError

STRONG = "k" * 40


class DictVault:
    """A SecretSource (the interface load_settings sees) holding fixed fields; records what it was built with."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.asked: list[str] = []
        self.built_with: Any = None

    def factory(self, partial: Any) -> DictVault:
        self.built_with = partial
        return self

    def get(self, key: str) -> str | None:
        self.asked.append(key)
        return self.fields.get(key)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    directory = tmp_path / "sec"
    directory.mkdir()
    return directory


def load(secrets: Path, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None, **kw: Any) -> Any:
    return load_settings({"APP_ENV": "test", "SECRETS_DIR": str(secrets), **(overrides or {})}, env or {}, **kw)


def test_each_source_and_its_provenance(secrets: Path) -> None:
    (secrets / "jwt_issuer").write_text("file-issuer\n")  # trailing newline stripped
    env = {"JWT_ISSUER": "env-issuer", "JWT_AUDIENCE": "env-aud", "PORT": "1234", "MODULES_DISABLED": "a, b,"}
    s = load(secrets, {"PORT": 9000}, env)
    assert (s["PORT"], s.source("PORT")) == (9000, "override")
    assert (s["JWT_ISSUER"], s.source("JWT_ISSUER")) == ("file-issuer", f"file:{secrets / 'jwt_issuer'}")
    assert (s["JWT_AUDIENCE"], s.source("JWT_AUDIENCE")) == ("env-aud", "env")
    assert (s["MODULES_DISABLED"], s.source("MODULES_DISABLED")) == (["a", "b"], "env")
    assert (s["JWT_ALGORITHM"], s.source("JWT_ALGORITHM")) == ("HS256", "default")
    # test env: missing keys are generated in memory, never written
    assert s.source("JWT_SECRET_KEY") == "generated" and len(s["JWT_SECRET_KEY"]) >= 32
    assert list(secrets.iterdir()) == [secrets / "jwt_issuer"]


def test_secrets_dir_comes_from_env_only_not_from_a_secret_file(secrets: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "jwt_issuer").write_text("other-dir")
    s = load_settings({"APP_ENV": "test"}, {"SECRETS_DIR": str(other)})
    assert s["JWT_ISSUER"] == "other-dir"


def test_vault_through_the_interface_secret_settings_ask_vault_first(secrets: Path) -> None:
    (secrets / "jwt_secret_key").write_text("file-" + STRONG)
    (secrets / "jwt_issuer").write_text("file-issuer")
    vault = DictVault(
        {"jwt_secret_key": "vault-" + STRONG, "jwt_issuer": "vault-issuer", "jwt_audience": "vault-aud",
         "vault_path": "ignored"}
    )
    env = {"JWT_AUDIENCE": "env-aud", "VAULT_PATH": "kv/keel"}
    s = load(secrets, {"VAULT_ADDR": "http://vault:8200"}, env, vault_factory=vault.factory)
    # the factory gets the settings that locate Vault
    assert vault.built_with["VAULT_ADDR"] == "http://vault:8200" and vault.built_with["VAULT_PATH"] == "kv/keel"
    assert (s["JWT_SECRET_KEY"], s.source("JWT_SECRET_KEY")) == ("vault-" + STRONG, "vault")  # secret: vault > file
    # not secret: the file before Vault
    assert (s["JWT_ISSUER"], s.source("JWT_ISSUER")) == ("file-issuer", f"file:{secrets / 'jwt_issuer'}")
    assert (s["JWT_AUDIENCE"], s.source("JWT_AUDIENCE")) == ("vault-aud", "vault")  # vault > env
    assert (s["VAULT_PATH"], s.source("VAULT_PATH")) == ("kv/keel", "env")  # VAULT_* never from Vault
    assert "vault_path" not in vault.asked


def test_vault_is_not_asked_without_vault_addr(secrets: Path) -> None:
    vault = DictVault({"jwt_issuer": "vault-issuer"})
    s = load(secrets, vault_factory=vault.factory)
    assert vault.built_with is None and s.source("JWT_ISSUER") == "default"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT from env: expected an integer, got 'eighty'"),
        ({"PORT": "0"}, "PORT from env: expected a value from 1 to 65535, got '0'"),
        ({"DEBUG": "maybe"}, "DEBUG from env: expected a boolean (true/false/1/0), got 'maybe'"),
        ({"APP_ENV": "prod"}, "APP_ENV from env: expected one of development, test, staging, production, got 'prod'"),
        ({"RATE_LIMIT_IP": "lots"}, "RATE_LIMIT_IP from env: expected a rate limit like '300/minute'"),
        ({"DB_POOL_TIMEOUT": "x"}, "DB_POOL_TIMEOUT from env: expected a number, got 'x'"),
    ],
)
def test_bad_values_name_key_source_and_expectation(secrets: Path, env: dict[str, str], message: str) -> None:
    overrides = {} if "APP_ENV" in env else {"APP_ENV": "test"}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({"SECRETS_DIR": str(secrets), **overrides}, env)


def test_bad_value_from_a_secret_file_names_the_file_and_hides_secret_values(secrets: Path) -> None:
    (secrets / "port").write_text("http")
    with pytest.raises(ConfigError, match=re.escape(f"PORT from file:{secrets / 'port'}: expected an integer")):
        load(secrets)


def test_unknown_override_is_refused(secrets: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*PORTT"):
        load(secrets, {"PORTT": 1})


def test_required_setting_missing_names_the_key_and_the_sources(
    secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = Setting("PAYMENT_API_TOKEN", "str", None, secret=True, required=True)
    monkeypatch.setattr(config, "SETTINGS", (*config.SETTINGS, extra))
    monkeypatch.setattr(config, "BY_KEY", {**config.BY_KEY, extra.key: extra})
    with pytest.raises(ConfigError) as info:
        load(secrets)
    message = str(info.value)
    assert "PAYMENT_API_TOKEN" in message
    assert f"secret files ({secrets})" in message and "env" in message
    # present in any source: fine
    assert load(secrets, env={"PAYMENT_API_TOKEN": "t"})["PAYMENT_API_TOKEN"] == "t"


def _production(secrets: Path, **env: str) -> Any:
    base = {"APP_ENV": "production", "JWT_SECRET_KEY": STRONG, "API_KEY_PEPPER": "p" * 32, "TRUSTED_HOSTS": "a.example"}
    return load_settings({"SECRETS_DIR": str(secrets)}, {**base, **env})


def test_production_accepts_a_safe_configuration(secrets: Path) -> None:
    s = _production(secrets)
    assert s.is_production and s["LOG_FORMAT"] == "json"
    assert not any(p.name == "jwt_secret_key" for p in secrets.iterdir())


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"JWT_SECRET_KEY": ""}, "JWT_SECRET_KEY is shorter than 32 bytes"),
        ({"JWT_SECRET_KEY": "short-key-31-bytes-long-xxxxxxx"}, "JWT_SECRET_KEY is shorter than 32 bytes"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS=* is not allowed in production"),
        ({"CORS_ORIGINS": "https://a.example,*"}, "CORS_ORIGINS=* is not allowed in production"),
        ({"DEBUG": "true"}, "DEBUG must be off in production"),
        ({"APP_ENV": "staging", "DEBUG": "1"}, "DEBUG must be off in production"),
        ({"TRUSTED_HOSTS": ""}, "TRUSTED_HOSTS is not set"),
    ],
)
def test_production_refusals(secrets: Path, env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        _production(secrets, **env)


def test_production_refuses_a_missing_jwt_key_and_never_generates_one(secrets: Path) -> None:
    with pytest.raises(ConfigError, match=r"JWT_SECRET_KEY is not set .generated/default keys are for development"):
        load_settings({"SECRETS_DIR": str(secrets)}, {"APP_ENV": "production", "API_KEY_PEPPER": "p" * 32})
    assert list(secrets.iterdir()) == []


def test_production_refuses_a_generated_key_file_source() -> None:
    # a key generated in development is marked "generated" for that process; production
    # refuses any generated (or default) source even when the value itself is long enough
    values = {s.key: s.default for s in config.SETTINGS}
    values.update(APP_ENV="production", JWT_SECRET_KEY=STRONG, API_KEY_PEPPER="p" * 32, TRUSTED_HOSTS=["a.example"])
    sources = dict.fromkeys(values, "default")
    for source in ("generated:secrets/jwt_secret_key", "generated", "default"):
        sources["JWT_SECRET_KEY"] = source
        with pytest.raises(ConfigError, match="JWT_SECRET_KEY is not set"):
            config.check_production(config.Settings(values, sources))
    sources["JWT_SECRET_KEY"] = "env"
    config.check_production(config.Settings(values, sources))


def test_development_generates_keys_once_into_the_secrets_dir(secrets: Path) -> None:
    first = load_settings({"SECRETS_DIR": str(secrets)}, {})
    key_file = secrets / "jwt_secret_key"
    assert first.source("JWT_SECRET_KEY") == f"generated:{key_file}"
    assert key_file.stat().st_mode & 0o777 == 0o600
    second = load_settings({"SECRETS_DIR": str(secrets)}, {})
    assert second["JWT_SECRET_KEY"] == first["JWT_SECRET_KEY"]
    assert second.source("JWT_SECRET_KEY") == f"file:{key_file}"


def test_log_format_defaults_by_environment(secrets: Path) -> None:
    assert load(secrets)["LOG_FORMAT"] == "text"
    assert load(secrets, {"LOG_FORMAT": "json"})["LOG_FORMAT"] == "json"


def test_flask_config_show_redacts_secrets(make_app: Any, pg_config: dict[str, Any]) -> None:
    import sqlalchemy as sa

    url = sa.make_url(pg_config["DATABASE_URL"]).set(password="db-pass-123").render_as_string(hide_password=False)
    app = make_app(JWT_SECRET_KEY="super-secret-" + STRONG, PORT=8181, DATABASE_URL=url)
    result = app.test_cli_runner().invoke(args=["config", "show"])
    assert result.exit_code == 0
    assert "super-secret" not in result.output and "db-pass-123" not in result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()}
    assert rows["JWT_SECRET_KEY"] == ["override", "********"]
    assert rows["DATABASE_URL"] == ["override", "********"]
    assert rows["PORT"] == ["override", "8181"]
    assert rows["JWT_ALGORITHM"] == ["default", "HS256"]
    assert rows["API_KEY_PEPPER"] == ["generated", "********"]


def test_production_lists_every_problem_at_once(secrets: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SECRETS_DIR": str(secrets)}, {"APP_ENV": "production", "CORS_ORIGINS": "*", "DEBUG": "1"})
    message = str(info.value)
    assert message.startswith("refusing to start with APP_ENV=production: ")
    for problem in ("JWT_SECRET_KEY is not set", "CORS_ORIGINS=*", "DEBUG must be off", "API_KEY_PEPPER is not set"):
        assert problem in message
