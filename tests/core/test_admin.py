"""/admin through the Flask test client: sign-in, panels, the session cookie, CSRF, admins only,
expiry, the login limits and bans of /auth/login, the audit trail (the browser tests are in
tests/browser/)."""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import URLSafeTimedSerializer

from core.errors import ConfigError
from core.http import admin
from core.logs import RequestContextFilter
from tests.conftest import ROOT
from tests.websocket.conftest import (
    Client,
    _quick_websocket_close,  # noqa: F401 (autouse: quick socket close)
    wait_until,
)

ADMIN = ("boss", "correct-horse-battery")
USER = ("pleb", "ordinary-password")
BANNED_IP = "203.0.113.9"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def sign_in(client: Any, username: str, password: str) -> Any:
    token = csrf_of(client.get("/admin").get_data(as_text=True))
    return client.post("/admin/login", data={"csrf_token": token, "username": username, "password": password})


def signed_in_page(client: Any) -> str:
    page = client.get("/admin")
    assert page.status_code == 200
    html: str = page.get_data(as_text=True)
    assert 'id="signed-in-user"' in html, html[:500]
    return html


def is_sign_in_form(response: Any) -> bool:
    return response.status_code == 200 and 'id="sign-in"' in response.get_data(as_text=True)


def error_code(response: Any) -> str:
    body = response.get_json()
    assert body is not None and body["success"] is False, response.get_data(as_text=True)[:300]
    code: str = body["error"]["code"]
    return code


def admin_cookie(response: Any) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(admin.COOKIE + "=")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


@pytest.fixture
def admin_app(make_app: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    """``admin_app(**settings)``: an app of its own database with an admin (``ADMIN``) and a
    plain user (``USER``)."""
    built: list[Any] = []

    def factory(**overrides: Any) -> Any:
        app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / f'admin{len(built)}.db'}", **overrides)
        built.append(app)
        users = app.extensions["keel"].jwt.users
        users.create(*ADMIN, roles=("admin",))
        users.create(*USER)
        return app

    return factory


@pytest.fixture
def app(admin_app: Callable[..., Any]) -> Any:
    return admin_app()


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """pytest's caplog; audit records get the request id, identity and client IP before any
    handler sees them (Keel's handlers add them with this filter)."""
    audit_logger, context = logging.getLogger("keel.audit"), RequestContextFilter()
    audit_logger.addFilter(context)
    yield caplog
    audit_logger.removeFilter(context)


def audit_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "keel.audit" and getattr(r, "event", None) == f"admin_{event}"]


# -- the page ---------------------------------------------------------------------------------


def test_anonymous_gets_the_sign_in_form_through_the_pipeline(client: Any) -> None:
    page = client.get("/admin", headers={"X-Request-ID": "admin-page-1"})
    assert is_sign_in_form(page)
    assert page.mimetype == "text/html"
    assert page.headers["X-Request-ID"] == "admin-page-1"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"  # the page carries a CSRF token
    assert page.headers["X-RateLimit-Limit"]  # the IP's limit applies
    cookie = admin_cookie(page)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert "Max-Age=" in cookie and "Secure" not in cookie  # plain HTTP here
    assert client.get("/admin/").status_code == 200  # served without a redirect


def test_the_cookie_is_secure_over_https(admin_app: Callable[..., Any]) -> None:
    assert "Secure" in admin_cookie(admin_app().test_client().get("/admin", base_url="https://localhost"))
    # TLS ended at a trusted proxy
    proxied = admin_app(TRUSTED_PROXY_COUNT=1).test_client()
    assert "Secure" in admin_cookie(proxied.get("/admin", headers={"X-Forwarded-Proto": "https"}))
    # a client's own header is not trusted without a proxy
    direct = admin_app().test_client()
    assert "Secure" not in admin_cookie(direct.get("/admin", headers={"X-Forwarded-Proto": "https"}))
    # HSTS on: the site is HTTPS only
    assert "Secure" in admin_cookie(admin_app(HSTS_SECONDS=600).test_client().get("/admin"))


def test_an_admin_signs_in_and_sees_modules_actions_errors_and_bans(
    admin_app: Callable[..., Any], tmp_path: Path
) -> None:
    actions = tmp_path / "admin-actions"
    actions.mkdir()
    shutil.copy(ROOT / "actions" / "system.yaml", actions)
    broken = "version: 1\nmodule: system\nactions:\n  oops:\n    handler: info\n    metods: [GET]\n"
    (actions / "broken.yaml").write_text(broken)
    app = admin_app(ACTIONS_DIR=str(actions))
    am = app.extensions["keel"]
    am.limiter.ban("ip", BANNED_IP, 600, actor="test")
    client = app.test_client()

    signed = sign_in(client, *ADMIN)
    assert signed.status_code == 303 and signed.headers["Location"] == "/admin"
    assert "HttpOnly" in admin_cookie(signed)
    html = signed_in_page(client)
    for name in ("auth", "admin", "system", "tasks"):
        assert f'<tr data-module="{name}">' in html
    assert '<span class="status healthy">healthy</span>' in html
    assert '<tr data-action="system_info">' in html and '<tr data-action="lift_ban">' in html
    errors = html.partition('id="action-errors"')[2].partition("</div>")[0]
    assert "broken.yaml:6" in errors and "metods" in errors, errors
    assert f'data-ban="ip:{BANNED_IP}"' in html
    assert html.count('name="csrf_token"') == 2  # sign-out and the one lift button


def test_lifting_a_ban_with_the_button(client: Any, am: Any, caplog: pytest.LogCaptureFixture) -> None:
    am.limiter.ban("ip", BANNED_IP, 600, actor="test")
    sign_in(client, *ADMIN)
    token = csrf_of(signed_in_page(client))
    with caplog.at_level(logging.INFO, logger="keel.audit"):
        lifted = client.post("/admin/bans/lift", data={"csrf_token": token, "kind": "ip", "identifier": BANNED_IP})
        assert lifted.status_code == 303 and lifted.headers["Location"] == "/admin"
        assert am.limiter.list_bans() == []
        assert f'data-ban="ip:{BANNED_IP}"' not in signed_in_page(client)
        # lifted meanwhile (another tab): the page shows it gone, the audit says so
        again = client.post("/admin/bans/lift", data={"csrf_token": token, "kind": "ip", "identifier": BANNED_IP})
        assert again.status_code == 303
    outcomes = [r.outcome for r in audit_lines(caplog, "lift_ban")]
    assert outcomes == ["ok", "not_found"]
    # the limiter's own audit line names the admin as the actor
    admin_id = am.jwt.users.by_username(ADMIN[0]).id
    assert [r for r in caplog.records if getattr(r, "event", None) == "ban_lifted" and r.actor == f"user:{admin_id}"]


def test_every_post_is_audited_with_identity_ip_request_id_and_outcome(
    client: Any, am: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin_id = am.jwt.users.by_username(ADMIN[0]).id
    am.limiter.ban("ip", BANNED_IP, 600, actor="test")
    with caplog.at_level(logging.INFO, logger="keel.audit"):
        token = csrf_of(client.get("/admin").get_data(as_text=True))
        client.post("/admin/login", data={"csrf_token": token, "username": ADMIN[0], "password": "wrong-password"})
        client.post("/admin/login", data={"csrf_token": "forged", "username": ADMIN[0], "password": ADMIN[1]})
        client.post(
            "/admin/login",
            data={"csrf_token": token, "username": ADMIN[0], "password": ADMIN[1]},
            headers={"X-Request-ID": "sign-in-req"},
        )
        token = csrf_of(signed_in_page(client))
        client.post("/admin/bans/lift", data={"csrf_token": token, "kind": "ip", "identifier": BANNED_IP})
        client.post("/admin/logout", data={"csrf_token": token})
    events = [
        (r.event, r.outcome)
        for r in caplog.records
        if r.name == "keel.audit" and (str(getattr(r, "event", "")).startswith("admin_") or r.event == "login")
    ]
    assert events == [
        ("login", "failed"),  # the password check shared with POST /auth/login audits it, once
        ("admin_sign_in", "forbidden"),
        ("admin_sign_in", "ok"),
        ("admin_lift_ban", "ok"),
        ("admin_sign_out", "ok"),
    ]
    ok = audit_lines(caplog, "sign_in")[-1]
    assert ok.request_id == "sign-in-req"
    assert ok.identity == f"user:{admin_id}" and ok.client_ip == "127.0.0.1"
    (failed,) = [r for r in caplog.records if r.name == "keel.audit" and getattr(r, "event", "") == "login"]
    assert failed.username == ADMIN[0] and failed.identity == "ip:127.0.0.1"
    logged = str([r.__dict__ for r in caplog.records])
    assert "wrong-password" not in logged and ADMIN[1] not in logged


def test_sign_out_ends_the_session(client: Any) -> None:
    sign_in(client, *ADMIN)
    token = csrf_of(signed_in_page(client))
    out = client.post("/admin/logout", data={"csrf_token": token})
    assert out.status_code == 303 and "Max-Age=0" in admin_cookie(out)
    assert is_sign_in_form(client.get("/admin"))


def test_the_admin_page_is_not_in_the_api_description(client: Any) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [p for p in paths if p.startswith("/admin")]


# -- CSRF -------------------------------------------------------------------------------------


def test_posts_without_the_sessions_csrf_token_are_refused(
    admin_app: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    app = admin_app()
    am = app.extensions["keel"]
    am.limiter.ban("ip", BANNED_IP, 600, actor="test")
    client = app.test_client()
    token = csrf_of(client.get("/admin").get_data(as_text=True))
    credentials = {"username": ADMIN[0], "password": ADMIN[1]}

    # sign-in (login CSRF): no token, an empty one, another session's token, no cookie at all
    other_token = csrf_of(app.test_client().get("/admin").get_data(as_text=True))
    for data in (credentials, {**credentials, "csrf_token": ""}, {**credentials, "csrf_token": other_token}):
        refused = client.post("/admin/login", data=data)
        assert refused.status_code == 403 and error_code(refused) == "forbidden"
        assert not refused.headers.getlist("Set-Cookie")
    fresh = app.test_client()
    refused = fresh.post("/admin/login", data={**credentials, "csrf_token": token})
    assert refused.status_code == 403  # the token without its session cookie
    # JSON instead of the form: no token either
    assert client.post("/admin/login", json={**credentials, "csrf_token": token}).status_code == 403

    assert client.post("/admin/login", data={**credentials, "csrf_token": token}).status_code == 303
    token = csrf_of(signed_in_page(client))
    ban = {"kind": "ip", "identifier": BANNED_IP}
    for data in (ban, {**ban, "csrf_token": other_token}, {**ban, "csrf_token": token[:-1] + "x"}):
        refused = client.post("/admin/bans/lift", data=data)
        assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert [b["identifier"] for b in am.limiter.list_bans()] == [BANNED_IP]
    assert client.post("/admin/logout", data={}).status_code == 403
    signed_in_page(client)  # still signed in
    # the token changed at sign-in: the anonymous form's token no longer works
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="keel.audit"):
        assert client.post("/admin/bans/lift", data={**ban, "csrf_token": other_token}).status_code == 403
    assert [r.outcome for r in audit_lines(caplog, "lift_ban")] == ["forbidden"]


# -- admins only ------------------------------------------------------------------------------


def test_a_non_admin_is_refused_and_gets_no_session(client: Any, am: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="keel.audit"):
        refused = sign_in(client, *USER)
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert not refused.headers.getlist("Set-Cookie")
    assert is_sign_in_form(client.get("/admin"))
    [line] = audit_lines(caplog, "sign_in")
    assert line.outcome == "forbidden"
    assert line.identity == f"user:{am.jwt.users.by_username(USER[0]).id}"


def test_anonymous_posts_lead_to_the_sign_in_form(client: Any, am: Any) -> None:
    am.limiter.ban("ip", BANNED_IP, 600, actor="test")
    token = csrf_of(client.get("/admin").get_data(as_text=True))  # an anonymous session's token
    for url in ("/admin/bans/lift", "/admin/logout"):
        answer = client.post(url, data={"csrf_token": token, "kind": "ip", "identifier": BANNED_IP})
        assert answer.status_code == 303 and answer.headers["Location"] == "/admin"
    assert len(am.limiter.list_bans()) == 1


@pytest.mark.parametrize("change", ["revoke", "disable", "demote"])
def test_an_admin_revoked_disabled_or_demoted_is_signed_out_at_once(client: Any, am: Any, change: str) -> None:
    sign_in(client, *ADMIN)
    signed_in_page(client)
    admin_id = am.jwt.users.by_username(ADMIN[0]).id
    if change == "revoke":
        am.jwt.revoke_user_tokens(admin_id, actor="test")
    elif change == "disable":
        am.jwt.set_active(admin_id, False, actor="test")
    else:
        am.jwt.set_roles(admin_id, ["user"], actor="test")
    assert is_sign_in_form(client.get("/admin"))


def test_a_signed_in_admin_counts_toward_the_users_limit_and_ban(client: Any, am: Any) -> None:
    sign_in(client, *ADMIN)
    page = client.get("/admin")
    assert '"user"' in page.headers["RateLimit-Policy"]
    admin_id = am.jwt.users.by_username(ADMIN[0]).id
    am.limiter.ban("user", str(admin_id), 600, actor="test")
    banned = client.get("/admin")
    assert banned.status_code == 403 and error_code(banned) == "banned" and banned.headers["Retry-After"]


# -- the session ------------------------------------------------------------------------------


def test_the_session_expires(client: Any, am: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    am.limiter.ban("ip", BANNED_IP, 600, actor="test")
    sign_in(client, *ADMIN)
    token = csrf_of(signed_in_page(client))
    ttl = am.settings["ADMIN_SESSION_TTL"]
    monkeypatch.setattr(admin, "_now", lambda: time.time() + ttl - 5)
    signed_in_page(client)  # still valid just before the end
    monkeypatch.setattr(admin, "_now", lambda: time.time() + ttl + 1)
    assert is_sign_in_form(client.get("/admin"))
    lift = client.post("/admin/bans/lift", data={"csrf_token": token, "kind": "ip", "identifier": BANNED_IP})
    assert lift.status_code == 303 and len(am.limiter.list_bans()) == 1


def test_a_forged_or_foreign_cookie_is_anonymous(client: Any, am: Any) -> None:
    admin_id = am.jwt.users.by_username(ADMIN[0]).id
    payload = {"c": "t", "e": time.time() + 600, "u": admin_id, "v": 0}
    foreign = URLSafeTimedSerializer("another-key-" + "x" * 40, salt="keel.admin.session").dumps(payload)
    for value in (foreign, "garbage", foreign[:-2] + "AA"):
        client.set_cookie(admin.COOKIE, value, path="/admin")
        assert is_sign_in_form(client.get("/admin"))


def test_ttl_is_a_setting(admin_app: Callable[..., Any]) -> None:
    cookie = admin_cookie(admin_app(ADMIN_SESSION_TTL=120).test_client().get("/admin"))
    assert re.search(r"Max-Age=1[12]\d\b", cookie), cookie


def test_production_without_a_key_has_no_admin_page(make_app: Callable[..., Any]) -> None:
    production = {
        "APP_ENV": "production",
        "JWT_SECRET_KEY": "j" * 48,
        "API_KEY_PEPPER": "p" * 48,
        "TRUSTED_HOSTS": ["localhost"],
    }
    off = make_app(**production).test_client().get("/admin")
    assert off.status_code == 404 and "ADMIN_SESSION_KEY" in off.get_json()["error"]["message"]
    on = make_app(**production, ADMIN_SESSION_KEY="k" * 40).test_client().get("/admin")
    assert is_sign_in_form(on) and "Secure" not in admin_cookie(on)
    with pytest.raises(ConfigError, match=r"ADMIN_SESSION_KEY .* shorter than 32 bytes"):
        make_app(ADMIN_SESSION_KEY="short")


# -- the login limits and bans of /auth/login -------------------------------------------------


def test_the_login_limit_of_auth_login_applies_to_the_form(admin_app: Callable[..., Any]) -> None:
    client = admin_app(RATE_LIMIT_LOGIN="3/minute", BAN_AFTER_VIOLATIONS=100).test_client()
    token = csrf_of(client.get("/admin").get_data(as_text=True))
    wrong = {"csrf_token": token, "username": ADMIN[0], "password": "wrong-password"}
    for _ in range(2):
        again = client.post("/admin/login", data=wrong)
        assert is_sign_in_form(again) and "Invalid username or password." in again.get_data(as_text=True)
    # the third attempt, through the API: one count for both
    assert client.post("/auth/login", json={"username": ADMIN[0], "password": "nope-nope"}).status_code == 401
    limited = client.post("/admin/login", data={**wrong, "password": ADMIN[1]})  # even the right password
    assert limited.status_code == 429 and error_code(limited) == "rate_limited" and limited.headers["Retry-After"]
    assert "Set-Cookie" not in limited.headers


def test_failed_sign_ins_ban_the_ip_as_failed_logins_do(admin_app: Callable[..., Any]) -> None:
    app = admin_app(RATE_LIMIT_LOGIN="100/minute", BAN_AFTER_VIOLATIONS=3)
    am = app.extensions["keel"]
    client = app.test_client()
    token = csrf_of(client.get("/admin").get_data(as_text=True))
    for _ in range(3):
        client.post("/admin/login", data={"csrf_token": token, "username": ADMIN[0], "password": "wrong-password"})
    assert [(b["kind"], b["identifier"]) for b in am.limiter.list_bans()] == [("ip", "127.0.0.1")]
    banned = client.get("/admin")
    assert banned.status_code == 403 and error_code(banned) == "banned"
    assert client.post("/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]}).status_code == 403


# -- the README -------------------------------------------------------------------------------


def readme_admin_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("### Admin page", 1)[1].split("<!-- /section:health -->", 1)[0]


def test_the_readme_admin_page_walkthrough(make_app: Callable[..., Any]) -> None:
    section = readme_admin_section()
    (command,) = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    echo, _, flask = command.partition(" | ")
    password = shlex.split(echo)[1]
    args = shlex.split(flask)
    assert args[:3] == ["flask", "--app", "app"]
    app = make_app()
    am = app.extensions["keel"]
    created = app.test_cli_runner().invoke(args=args[3:], input=password + "\n")
    assert created.exit_code == 0, created.output
    username = args[5]

    client = app.test_client()
    assert sign_in(client, username, password).status_code == 303
    html = signed_in_page(client)
    assert all(f'<section id="{panel}">' in html for panel in ("modules", "actions", "bans"))
    # the settings it names, with the default it states
    assert am.settings["ADMIN_SESSION_TTL"] == 1800 and "30 minutes" in section
    assert am.settings.source("ADMIN_SESSION_KEY") == "generated"
    # revoking the admin's tokens signs the admin out at once
    (revoke,) = re.findall(r"`(flask --app app users revoke-tokens \w+)`", section)
    revoked = app.test_cli_runner().invoke(args=shlex.split(revoke)[3:])
    assert revoked.exit_code == 0, revoked.output
    assert is_sign_in_form(client.get("/admin"))


def test_a_banned_admin_cannot_sign_in(client: Any, am: Any) -> None:
    am.limiter.ban("user", str(am.jwt.users.by_username(ADMIN[0]).id), 600, actor="test")
    refused = sign_in(client, *ADMIN)
    assert refused.status_code == 403 and error_code(refused) == "banned" and refused.headers["Retry-After"]
    assert not refused.headers.getlist("Set-Cookie")


def test_strangers_guessing_do_not_lock_out_a_browser_that_signed_in_before(admin_app: Callable[..., Any]) -> None:
    """The device tokens of /auth/login: this browser's sign-ins count apart from the name's."""
    app = admin_app(RATE_LIMIT_LOGIN="3/minute", BAN_AFTER_VIOLATIONS=100)

    def browser(ip: str) -> Any:
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = ip
        return client

    owner = browser("198.51.100.1")
    signed = sign_in(owner, *ADMIN)
    device = [c for c in signed.headers.getlist("Set-Cookie") if c.startswith("keel_device=")]
    assert len(device) == 1 and "Path=/admin/login" in device[0] and "HttpOnly" in device[0]
    owner.post("/admin/logout", data={"csrf_token": csrf_of(signed_in_page(owner))})

    stranger = browser("198.51.100.2")
    for _ in range(2):  # with the owner's first sign-in, the name's 3 attempts
        assert is_sign_in_form(sign_in(stranger, ADMIN[0], "wrong-password"))
    assert sign_in(stranger, ADMIN[0], "wrong-password").status_code == 429
    assert sign_in(browser("198.51.100.3"), *ADMIN).status_code == 429  # the name's attempts are used up
    assert sign_in(owner, *ADMIN).status_code == 303  # this browser's are not


# -- presence ---------------------------------------------------------------------------------


@pytest.fixture
def served(admin_app: Callable[..., Any], request: pytest.FixtureRequest) -> Iterator[Callable[[str], Any]]:
    """``served(store)``: an app of ``admin_app`` served on a free port (python-socketio clients
    connect to it for real; ``store`` "redis" puts its rooms in the test's Redis), and its URL."""
    from werkzeug.serving import make_server

    servers: list[tuple[Any, threading.Thread]] = []

    def start(store: str) -> tuple[Any, str]:
        app = admin_app(**(request.getfixturevalue("redis_config") if store == "redis" else {}))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return app, f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(5)
        server.server_close()


@pytest.fixture
def sockets() -> Iterator[Callable[[str, str], Client]]:
    """``sockets(url, token)``: a connected python-socketio client, closed after the test."""
    made: list[Client] = []

    def connect(url: str, token: str) -> Client:
        made.append(Client(url, {"token": token}))
        return made[-1].connect()

    yield connect
    for client in made:
        client.close()


def user_token(app: Any, username: str) -> tuple[int, str, str]:
    """A new user: its id, an access token and a refresh token."""
    am = app.extensions["keel"]
    user = am.jwt.users.create(username, "socket-password")
    pair = am.jwt.issue_pair(user)
    return user.id, pair["access_token"], pair["refresh_token"]


def call_ok(sock: Any, event: str, data: dict[str, Any] | None = None) -> Any:
    answer = sock.call(event, data)
    assert answer["ok"] is True, answer
    return answer


def presence_of(client: Any) -> dict[str, Any]:
    answer = client.get("/admin/presence.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json", answer.get_data(as_text=True)[:300]
    assert answer.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = answer.get_json()
    assert body["success"] is True and body["websocket"] is True and body["error"] is None
    return body


def room_rows(body: dict[str, Any]) -> dict[str, tuple[int, list[str]]]:
    return {r["room"]: (r["count"], [m["username"] for m in r["members"]]) for r in body["rooms"]}


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_presence_lists_every_room_with_its_members(
    served: Callable[[str], Any], sockets: Callable[[str, str], Client], store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, url = served(store)
    client = app.test_client()
    sign_in(client, *ADMIN)
    assert presence_of(client)["rooms"] == []
    assert '<tr id="no-rooms">' in signed_in_page(client)

    _, alice_token, alice_refresh = user_token(app, "alice")
    bob_id, bob_token, _ = user_token(app, "bob")
    alice, bob = sockets(url, alice_token), sockets(url, bob_token)
    call_ok(alice, "join_room", {"room": "lobby"})
    call_ok(bob, "join_room", {"room": "lobby"})
    call_ok(bob, "join_room", {"room": "lobby"})  # twice on one connection: still one member
    bob_again = sockets(url, bob_token)  # a second connection of bob: still one member
    call_ok(bob_again, "join_room", {"room": "lobby"})
    # a private room: the admin sees it, though not among its allowed members
    call_ok(bob, "create_room", {"room": "secret.plans", "private": True, "max_members": 3})

    body = presence_of(client)
    assert room_rows(body) == {"lobby": (2, ["alice", "bob"]), "secret.plans": (1, ["bob"])}
    assert body["total_rooms"] == 2
    secret = next(r for r in body["rooms"] if r["room"] == "secret.plans")
    assert secret["private"] is True and secret["max_members"] == 3
    assert {"user_id": bob_id, "username": "bob"} in secret["members"]
    # what a client sees of the same rooms: the private one is hidden from alice
    assert [r["room"] for r in call_ok(alice, "list_rooms")["rooms"]] == ["lobby"]
    text = json.dumps(body)
    for secret_value in (alice_token, bob_token, alice_refresh, "socket-password"):
        assert secret_value not in text
    assert all(set(m) == {"user_id", "username"} for r in body["rooms"] for m in r["members"])

    # the page renders the same, without any script running
    html = signed_in_page(client)
    row = html.partition('<tr data-room="lobby">')[2].partition("</tr>")[0]
    assert '<td class="count">2</td>' in row and "alice #" in row and "bob #" in row
    assert '<script src="/admin/presence.js" defer></script>' in html
    # past PRESENCE_ROOMS rooms, the first ones are listed and the rest counted
    with monkeypatch.context() as patch:
        patch.setattr(admin, "PRESENCE_ROOMS", 1)
        capped = presence_of(client)
        assert [r["room"] for r in capped["rooms"]] == ["lobby"] and capped["total_rooms"] == 2
        assert "2 rooms (the first 1 shown)" in signed_in_page(client)

    call_ok(alice, "leave_room", {"room": "lobby"})
    assert room_rows(presence_of(client))["lobby"] == (1, ["bob"])
    bob.close()
    assert room_rows(presence_of(client))["lobby"] == (1, ["bob"])  # bob's other connection
    bob_again.close()
    wait_until(lambda: "lobby" not in room_rows(presence_of(client)))
    # an auto-created room goes with its last member; a created one stays (empty) for a while
    assert room_rows(presence_of(client)) == {"secret.plans": (0, [])}


def test_presence_is_for_a_signed_in_admin_only(client: Any, am: Any) -> None:
    anonymous = client.get("/admin/presence.json")
    assert anonymous.status_code == 401 and error_code(anonymous) == "unauthorized"
    assert anonymous.headers["Cache-Control"] == "no-store"
    # a non-admin is refused at sign-in and gets no session to ask with
    assert sign_in(client, *USER).status_code == 403
    assert client.get("/admin/presence.json").status_code == 401
    sign_in(client, *ADMIN)
    assert presence_of(client)["rooms"] == []
    admin_id = am.jwt.users.by_username(ADMIN[0]).id
    am.limiter.ban("user", str(admin_id), 600, actor="test")  # a banned admin: 403, as the page
    banned = client.get("/admin/presence.json")
    assert banned.status_code == 403 and error_code(banned) == "banned"
    am.limiter.lift_ban("user", str(admin_id), actor="test")
    am.jwt.set_roles(admin_id, ["user"], actor="test")  # demoted: signed out at once
    assert client.get("/admin/presence.json").status_code == 401
    # a forged cookie is nobody
    client.set_cookie(admin.COOKIE, "garbage", path="/admin")
    assert client.get("/admin/presence.json").status_code == 401


def test_the_page_script_is_served_from_this_origin_under_the_csp(client: Any) -> None:
    sign_in(client, *ADMIN)
    page = client.get("/admin")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp.partition("script-src")[2].partition(";")[0]
    html = page.get_data(as_text=True)
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/admin/presence.js" defer>']
    script = client.get("/admin/presence.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert b"textContent" in script.data and b"innerHTML" not in script.data
    assert 'data-url="/admin/presence.json"' in html


def test_presence_without_websocket_or_redis_says_so(
    admin_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, redis_server_factory: Callable[[], Any]
) -> None:
    server = redis_server_factory()
    app = admin_app(REDIS_URL=server.url, REDIS_KEY_PREFIX="admin-presence:")
    am = app.extensions["keel"]
    client = app.test_client()
    sign_in(client, *ADMIN)
    server.stop()  # Redis gone: the page still renders, and says why there are no rooms
    html = signed_in_page(client)
    error = html.partition('id="presence-error"')[2].partition("</p>")[0]
    assert "hidden" not in error and "Redis does not answer" in error, error
    body = client.get("/admin/presence.json").get_json()
    assert body["rooms"] == [] and "Redis does not answer" in body["error"]

    monkeypatch.delitem(am._managers, "websocket")  # an app built without the WebSocket manager
    html = signed_in_page(client)
    assert 'id="presence-off"' in html and "WebSocket is not enabled" in html
    assert 'id="presence-rooms"' not in html
    assert client.get("/admin/presence.json").get_json()["websocket"] is False
