"""The audit trail: every security event once on ``keel.audit``, with who, from where, which
request and the outcome, and never a secret."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "audit-password-1"
ADMIN_PASSWORD = "audit-admin-pass"

EVENT_FIELDS = {
    "user_created": {"user_id"},
    "login": set(),  # ok: user_id; failed: the username (only when it looks like one)
    "refresh_reuse": {"user_id"},
    "logout": {"user_id"},
    "logout_all": {"user_id", "reason"},
    "api_key_created": {"api_key_id", "owner_id", "actor"},
    "api_key_revoked": {"api_key_id", "actor"},
    "ban": {"ban_kind", "ban_identifier", "seconds", "actor"},
    "ban_lifted": {"ban_kind", "ban_identifier", "actor"},
    "tokens_revoked": {"user_id", "actor"},
    "user_disabled": {"user_id", "actor"},
    "user_enabled": {"user_id", "actor"},
    "admin_action": {"action", "status"},
    "actions_reloaded": {"files", "actor"},
    "actions_reload_failed": {"file", "errors", "actor"},
}


def _events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "keel.audit"]


def test_every_security_event_is_audited_once_with_who_where_and_outcome(
    make_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    actions_dir = tmp_path / "actions"
    actions_dir.mkdir(exist_ok=True)
    app = make_app(ACTIONS_DIR=str(actions_dir), ACTIONS_RELOAD_INTERVAL=0, RATE_LIMIT_LOGIN="1000/minute")
    am = app.extensions["keel"]
    client = app.test_client()
    am.jwt.users.create("auditadmin", ADMIN_PASSWORD, roles=("admin", "user"))
    caplog.set_level(logging.INFO, logger="keel.audit")
    caplog.clear()
    seen: dict[str, list[logging.LogRecord]] = {}

    def step(event: str, call: Any) -> Any:
        before = len(_events(caplog))
        result = call()
        new = [r for r in _events(caplog)[before:] if r.event == event]  # type: ignore[attr-defined]
        assert len(new) == 1, (event, [(r.event, r.getMessage()) for r in _events(caplog)[before:]])  # type: ignore[attr-defined]
        seen.setdefault(event, []).extend(new)
        return result

    rid = {"X-Request-ID": "audit-req-1"}
    step("user_created", lambda: client.post("/auth/register", json={"username": "aud", "password": PASSWORD}))
    bad = step("login", lambda: client.post("/auth/login", json={"username": "aud", "password": "wrong-pass"}))
    assert bad.status_code == 401
    assert (seen["login"][0].outcome, seen["login"][0].username) == ("failed", "aud")  # type: ignore[attr-defined]
    pair = step(
        "login", lambda: client.post("/auth/login", json={"username": "aud", "password": PASSWORD}, headers=rid)
    ).json
    assert seen["login"][1].outcome == "ok" and seen["login"][1].request_id == "audit-req-1"  # type: ignore[attr-defined]
    assert seen["login"][1].user_id == am.jwt.users.by_username("aud").id  # type: ignore[attr-defined]
    assert seen["login"][1].client_ip == "127.0.0.1"  # type: ignore[attr-defined]
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json
    step("refresh_reuse", lambda: client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}))
    fresh = client.post("/auth/login", json={"username": "aud", "password": PASSWORD}).json
    user = {"Authorization": f"Bearer {fresh['access_token']}"}
    key = step(
        "api_key_created", lambda: client.post("/auth/api-keys", json={"name": "k", "scopes": []}, headers=user)
    ).json
    step("api_key_revoked", lambda: client.delete(f"/auth/api-keys/{key['api_key']['id']}", headers=user))
    step("logout", lambda: client.post("/auth/logout", headers=user))
    again = client.post("/auth/login", json={"username": "aud", "password": PASSWORD}).json
    step(
        "logout_all",
        lambda: client.post("/auth/logout-all", headers={"Authorization": f"Bearer {again['access_token']}"}),
    )
    assert refreshed  # the first rotation worked

    admin_pair = client.post("/auth/login", json={"username": "auditadmin", "password": ADMIN_PASSWORD}).json
    admin = {"Authorization": f"Bearer {admin_pair['access_token']}"}
    uid = am.jwt.users.by_username("aud").id
    step(
        "ban",
        lambda: client.post(
            "/actions/ban", json={"kind": "ip", "identifier": "203.0.113.7", "seconds": 60}, headers=admin
        ),
    )
    step(
        "ban_lifted",
        lambda: client.post("/actions/lift_ban", json={"kind": "ip", "identifier": "203.0.113.7"}, headers=admin),
    )
    step("tokens_revoked", lambda: client.post("/actions/revoke_user_tokens", json={"user_id": uid}, headers=admin))
    step("admin_action", lambda: client.get("/actions/list_bans", headers=admin))
    runner = app.test_cli_runner()
    step("user_disabled", lambda: runner.invoke(args=["users", "disable", "aud"]))
    step("user_enabled", lambda: runner.invoke(args=["users", "enable", "aud"]))
    (actions_dir / "extra.yaml").write_text("version: 1\nmodule: system\nactions:\n  extra_info:\n    handler: info\n")
    step("actions_reloaded", lambda: am.actions.reload())
    (actions_dir / "extra.yaml").write_text("version: 1\nmodule: system\nactions:\n  extra_info:\n    handlr: info\n")
    step("actions_reload_failed", lambda: am.actions.reload())

    assert set(seen) == set(EVENT_FIELDS)
    for event, records in seen.items():
        for record in records:
            fields = vars(record)
            assert EVENT_FIELDS[event] <= set(fields), (event, sorted(fields))
            assert fields["outcome"] in ("ok", "failed", "refused")
    in_requests = [r for e in ("login", "api_key_created", "ban", "admin_action") for r in seen[e]]
    assert all(r.request_id and r.client_ip for r in in_requests)  # type: ignore[attr-defined]
    assert seen["ban"][0].identity == f"user:{am.jwt.users.by_username('auditadmin').id}"  # type: ignore[attr-defined]
    # never a secret
    text = caplog.text + " ".join(str(vars(r)) for r in _events(caplog))
    for secret in (PASSWORD, ADMIN_PASSWORD, "wrong-pass", pair["access_token"], pair["refresh_token"], key["key"]):
        assert secret not in text
