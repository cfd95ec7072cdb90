"""`flask users ...` and `flask api-keys ...` through app.test_cli_runner()."""

from __future__ import annotations

from typing import Any

from tests.auth.conftest import assert_unauthorized, bearer, login


def test_users_cli(auth_app: Any) -> None:
    app = auth_app()
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "admin1", "--admin", "--password-stdin"], input="s3cret-pass-word\n"
    )
    assert result.exit_code == 0, result.output
    assert "created user admin1" in result.output and "admin" in result.output
    assert "s3cret-pass-word" not in result.output
    client = app.test_client()
    token = login(client, "admin1", "s3cret-pass-word")["access_token"]
    assert client.get("/probe/admin", headers=bearer(token)).status_code == 200

    # Prompted password (with confirmation).
    result = runner.invoke(args=["users", "create", "plain1"], input="another-password\nanother-password\n")
    assert result.exit_code == 0, result.output
    plain = login(client, "plain1", "another-password")["access_token"]
    assert client.get("/probe/admin", headers=bearer(plain)).status_code == 403

    duplicate = runner.invoke(args=["users", "create", "admin1", "--password-stdin"], input="whatever-password\n")
    assert duplicate.exit_code != 0 and "already taken" in duplicate.output
    short = runner.invoke(args=["users", "create", "shorty", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "password" in short.output and "Traceback" not in short.output

    listing = runner.invoke(args=["users", "list"])
    assert "admin1" in listing.output and "plain1" in listing.output and "active" in listing.output

    disabled = runner.invoke(args=["users", "disable", "admin1"])
    assert disabled.exit_code == 0, disabled.output
    assert_unauthorized(client.get("/probe/admin", headers=bearer(token)))
    assert client.post("/auth/login", json={"username": "admin1", "password": "s3cret-pass-word"}).status_code == 401
    assert runner.invoke(args=["users", "enable", "admin1"]).exit_code == 0
    token = login(client, "admin1", "s3cret-pass-word")["access_token"]
    assert runner.invoke(args=["users", "revoke-tokens", "admin1"]).exit_code == 0
    assert_unauthorized(client.get("/auth/me", headers=bearer(token)))
    missing = runner.invoke(args=["users", "disable", "nobody"])
    assert missing.exit_code != 0 and "no user" in missing.output


def test_api_keys_cli(auth_app: Any) -> None:
    app = auth_app()
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "owner1", "--password-stdin"], input="owner-password\n")
    result = runner.invoke(
        args=["api-keys", "create", "--name", "deploy", "--scope", "tasks:read", "--scope", "tasks:write",
              "--owner", "owner1", "--expires-days", "30"]
    )
    assert result.exit_code == 0, result.output
    keys = [line for line in result.stdout.splitlines() if line.startswith("keel_")]
    assert len(keys) == 1
    key = keys[0]
    client = app.test_client()
    ok = client.get("/probe/scoped", headers={"X-API-Key": key})
    assert ok.status_code == 200 and ok.get_json()["api_key"]["name"] == "deploy"

    listing = runner.invoke(args=["api-keys", "list"])
    key_id = key.split("_", 2)[1]
    assert key_id in listing.output and "tasks:read,tasks:write" in listing.output
    assert key.split("_", 2)[2] not in listing.output

    assert runner.invoke(args=["api-keys", "revoke", key_id]).exit_code == 0
    assert_unauthorized(client.get("/probe/scoped", headers={"X-API-Key": key}))
    assert "revoked" in runner.invoke(args=["api-keys", "list"]).output
    bad = runner.invoke(args=["api-keys", "create", "--name", "x", "--scope", "NOT VALID"])
    assert bad.exit_code != 0 and "scopes" in bad.output
    unknown = runner.invoke(args=["api-keys", "revoke", "0123456789abcdef"])
    assert unknown.exit_code != 0
