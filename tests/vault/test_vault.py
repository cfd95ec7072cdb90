"""VaultManager against a real OpenBao server: precedence, AppRole, renewal, failures (SPEC §2)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import hvac
import pytest

from core.errors import ConfigError
from tests.vault.conftest import vault_overrides, wait_until

KEY = "v" * 40  # a 40-byte HS256 key


def test_vault_precedence_and_provenance(build_app: Any, vault: dict[str, Any], base_config: dict[str, Any]) -> None:
    from pathlib import Path

    secrets = Path(base_config["SECRETS_DIR"])
    (secrets / "jwt_secret_key").write_text("from-file-" + KEY)
    (secrets / "jwt_issuer").write_text("file-issuer")
    vault["write"](
        jwt_secret_key="from-vault-" + KEY, jwt_issuer="vault-issuer", jwt_audience="vault-aud", extra_field="x1"
    )
    env = {
        "JWT_AUDIENCE": "env-aud",
        "JWT_ALGORITHM": "HS256",
        "API_KEY_PEPPER": "env-pepper-0123456789abcdef",
        "JWT_ISSUER": "env-iss",
    }
    app = build_app(env=env, **vault_overrides(vault, JWT_ACCESS_TTL=60))
    am = app.extensions["keel"]
    s = am.settings
    # secret: Vault first, before the secret file
    assert (s["JWT_SECRET_KEY"], s.source("JWT_SECRET_KEY")) == ("from-vault-" + KEY, "vault")
    # not secret: the secret file first, then Vault, then env
    assert s["JWT_ISSUER"] == "file-issuer" and s.source("JWT_ISSUER").startswith("file:")
    assert (s["JWT_AUDIENCE"], s.source("JWT_AUDIENCE")) == ("vault-aud", "vault")
    # not in Vault: env; overrides beat everything
    assert (s["API_KEY_PEPPER"], s.source("API_KEY_PEPPER")) == ("env-pepper-0123456789abcdef", "env")
    assert (s["JWT_ACCESS_TTL"], s.source("JWT_ACCESS_TTL")) == (60, "override")
    # the running manager serves every field of the one read, case-insensitively
    assert am.vault.get("extra_field") == "x1" and am.vault.get("JWT_AUDIENCE") == "vault-aud"
    health = app.test_client().get("/health").get_json()
    assert health["managers"]["vault"]["status"] == "healthy"
    assert vault["token"] not in str(health)


def test_vault_typed_value_is_validated_naming_vault(build_app: Any, vault: dict[str, Any]) -> None:
    vault["write"](jwt_access_ttl="soon")
    with pytest.raises(ConfigError, match=r"JWT_ACCESS_TTL from vault: expected an integer, got 'soon'"):
        build_app(**vault_overrides(vault))


def test_vault_without_credentials_stops_the_start(build_app: Any, vault: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID"):
        build_app(VAULT_ADDR=vault["addr"])


def _approle(vault: dict[str, Any], token_ttl: str, max_ttl: str = "1h") -> tuple[str, str]:
    """Enable AppRole on the dev server (once) and create a role reading the test's path."""
    root = hvac.Client(url=vault["addr"], token=vault["token"])
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        try:
            root.sys.enable_auth_method("approle")
        except hvac.exceptions.InvalidRequest:  # enabled meanwhile by a parallel run
            pass
    name = "keel-" + uuid.uuid4().hex[:8]
    root.sys.create_or_update_policy(name, f'path "secret/data/{vault["path"]}" {{ capabilities = ["read"] }}')
    root.auth.approle.create_or_update_approle(name, token_policies=[name], token_ttl=token_ttl, token_max_ttl=max_ttl)
    role_id = root.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    root.adapter.close()
    return role_id, secret_id


def test_approle_login_and_background_token_renewal(build_app: Any, vault: dict[str, Any]) -> None:
    vault["write"](jwt_secret_key=KEY)
    role_id, secret_id = _approle(vault, token_ttl="3s")
    overrides = vault_overrides(vault, VAULT_TOKEN=None, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id)
    app = build_app(**overrides)
    am = app.extensions["keel"]
    assert (am.settings["JWT_SECRET_KEY"], am.settings.source("JWT_SECRET_KEY")) == (KEY, "vault")
    source = am.vault.source
    assert source.auth_method == "approle" and source.token_ttl == 3
    token = source.client.token
    # Without renewal the 3 s token would be gone after 4 s; the background thread renews it.
    time.sleep(4.0)
    probe = hvac.Client(url=vault["addr"], token=token)
    assert probe.auth.token.lookup_self()["data"]["ttl"] > 0
    probe.adapter.close()
    assert am.vault.health()["status"] == "healthy"


def test_approle_logs_in_again_when_the_token_reaches_its_max_ttl(build_app: Any, vault: dict[str, Any]) -> None:
    vault["write"](jwt_secret_key=KEY, marker="one")
    role_id, secret_id = _approle(vault, token_ttl="2s", max_ttl="3s")
    overrides = vault_overrides(vault, VAULT_TOKEN=None, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id,
                                VAULT_CACHE_TTL=1)
    app = build_app(**overrides)
    am = app.extensions["keel"]
    first_token = am.vault.source.client.token
    time.sleep(4.0)  # the first token is dead by now (max TTL 3 s)
    vault["write"](jwt_secret_key=KEY, marker="two")
    assert wait_until(lambda: am.vault.get("marker") == "two", timeout=3)
    assert am.vault.source.client.token != first_token
    assert am.vault.health()["status"] == "healthy"


def test_vault_stopped_serves_cached_values_and_degrades(
    build_app: Any, private_vault: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    private_vault["write"](jwt_secret_key=KEY, extra_field="cached-value-xyz")
    app = build_app(**vault_overrides(private_vault, VAULT_CACHE_TTL=1, VAULT_TIMEOUT=0.5))
    am = app.extensions["keel"]
    client = app.test_client()
    assert client.get("/health").get_json()["managers"]["vault"]["status"] == "healthy"
    private_vault["stop"]()
    caplog.set_level(logging.WARNING, logger="core.managers.vault")
    # TTL 1 s: the refresh fails, then it is probed again every second
    assert wait_until(lambda: am.vault.health()["status"] == "degraded", timeout=5)
    time.sleep(1.6)
    assert am.vault.get("extra_field") == "cached-value-xyz"
    body = client.get("/health").get_json()
    assert body["status"] == "degraded"
    assert body["managers"]["vault"]["fallback"] == "cache"
    assert body["managers"]["vault"]["error"] == "unreachable"
    assert body["managers"]["vault"]["circuit"] in ("open", "half_open")
    warnings = [r for r in caplog.records if r.name == "core.managers.vault" and "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one per failure class per minute
    assert all("cached-value-xyz" not in r.getMessage() and KEY not in r.getMessage() for r in caplog.records)


def test_health_follows_vault_within_15_s_while_the_cache_is_fresh(
    build_app: Any, private_vault: dict[str, Any]
) -> None:
    """The cache is good for 5 minutes, yet /health turns degraded within 15 s of Vault going
    away (a background reachability probe) and healthy within 15 s of it coming back."""
    private_vault["write"](jwt_secret_key=KEY, extra_field="cached")
    app = build_app(**vault_overrides(private_vault, VAULT_CACHE_TTL=300, VAULT_TIMEOUT=0.5))
    am = app.extensions["keel"]
    client = app.test_client()
    assert client.get("/health").get_json()["managers"]["vault"]["status"] == "healthy"
    time.sleep(1.0)  # past the refresher's first token look-up: from now on nothing else calls Vault
    private_vault["stop"]()
    went = time.monotonic()
    assert wait_until(lambda: client.get("/health").get_json()["managers"]["vault"]["status"] == "degraded", 15)
    assert time.monotonic() - went < 15
    assert client.get("/health").get_json()["managers"]["vault"]["error"] == "unreachable"
    assert am.vault.get("extra_field") == "cached"  # still served from the cache meanwhile
    private_vault["start"]()
    private_vault["write"](jwt_secret_key=KEY, extra_field="cached")  # a dev server restarts empty
    back = time.monotonic()
    assert wait_until(lambda: client.get("/health").get_json()["managers"]["vault"]["status"] == "healthy", 15)
    assert time.monotonic() - back < 15


def test_vault_down_at_start_falls_through_to_env(build_app: Any) -> None:
    from tests.conftest import free_port

    started = time.monotonic()
    app = build_app(
        env={"JWT_SECRET_KEY": "env-" + KEY},
        VAULT_ADDR=f"http://127.0.0.1:{free_port()}",
        VAULT_TOKEN="t",
    )
    assert time.monotonic() - started < 3
    am = app.extensions["keel"]
    assert (am.settings["JWT_SECRET_KEY"], am.settings.source("JWT_SECRET_KEY")) == ("env-" + KEY, "env")
    report = app.test_client().get("/health").get_json()
    assert report["status"] == "degraded"
    vault_report = report["managers"]["vault"]
    assert {k: vault_report[k] for k in ("status", "fallback", "error")} == {
        "status": "degraded", "fallback": "next_source", "error": "unreachable",
    }


def test_wrong_token_403_falls_through_and_degrades(build_app: Any, vault: dict[str, Any]) -> None:
    vault["write"](jwt_secret_key="vault-" + KEY)
    app = build_app(env={"JWT_SECRET_KEY": "env-" + KEY}, **vault_overrides(vault, VAULT_TOKEN="not-a-token"))
    am = app.extensions["keel"]
    assert am.settings.source("JWT_SECRET_KEY") == "env"
    assert am.vault.get("jwt_secret_key") is None
    report = am.health()
    assert report["status"] == "degraded"
    assert report["managers"]["vault"]["error"] == "forbidden"


def test_slow_vault_times_out_within_the_limit(build_app: Any, blackhole: str) -> None:
    started = time.monotonic()
    app = build_app(env={"JWT_ISSUER": "env-iss"}, VAULT_ADDR=blackhole, VAULT_TOKEN="t", VAULT_TIMEOUT=0.3)
    assert time.monotonic() - started < 2.5
    am = app.extensions["keel"]
    assert am.settings.source("JWT_ISSUER") == "env"
    assert am.vault.health()["error"] == "timeout"


def test_changed_value_fires_secret_changed_without_the_value(build_app: Any, vault: dict[str, Any]) -> None:
    vault["write"](jwt_secret_key=KEY, webhook_token="one")
    app = build_app(**vault_overrides(vault, VAULT_CACHE_TTL=1))
    am = app.extensions["keel"]
    seen: list[dict[str, Any]] = []
    am.hooks.register("secret_changed", lambda **data: seen.append(data))
    vault["write"](jwt_secret_key=KEY, webhook_token="two")
    assert wait_until(lambda: seen, timeout=5)
    assert seen == [{"key": "webhook_token", "source": "vault"}]
    assert am.vault.get("webhook_token") == "two"
    # settings stay what the app started with; the manager serves the new value
    assert am.settings.source("JWT_SECRET_KEY") == "vault"


def test_dispose_stops_the_refresher(build_app: Any, vault: dict[str, Any]) -> None:
    vault["write"](jwt_secret_key=KEY)
    app = build_app(**vault_overrides(vault))
    am = app.extensions["keel"]
    thread = am.vault._thread
    assert thread is not None and thread.is_alive()
    am.dispose()
    assert not thread.is_alive()
