"""/admin in a real browser: sign in, read the panels, lift a ban by clicking, watch a room's
presence change without a reload; a non-admin is refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from core.http import admin
from tests.browser.conftest import ADMIN, USER, Served, screenshot, wait_for
from tests.conftest import ROOT
from tests.websocket.conftest import (
    Client,
    _quick_websocket_close,  # noqa: F401 (autouse: quick socket close)
)

BANNED_IP = "203.0.113.7"
BROKEN = "version: 1\nmodule: system\nactions:\n  oops:\n    handler: info\n    metods: [GET]\n"


def sign_in(driver: Any, url: str, username: str, password: str) -> None:
    driver.get(url + "/admin")
    wait_for(driver, lambda d: d.find_elements(By.ID, "sign-in"), "the sign-in form")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in-button").click()


def test_an_admin_signs_in_reads_the_panels_and_lifts_a_ban(
    browser: Any, served: Callable[..., Served], tmp_path: Path
) -> None:
    actions = tmp_path / "browser-actions"
    actions.mkdir()
    shutil.copy(ROOT / "actions" / "system.yaml", actions)
    (actions / "broken.yaml").write_text(BROKEN)
    server = served(ACTIONS_DIR=str(actions))
    server.am.limiter.ban("ip", BANNED_IP, 600, actor="test")

    sign_in(browser, server.url, *ADMIN)
    wait_for(browser, lambda d: d.find_elements(By.ID, "signed-in-user"), "the signed-in page")
    assert browser.find_element(By.ID, "signed-in-user").text == ADMIN[0]
    rows = browser.find_elements(By.CSS_SELECTOR, "#modules tbody tr")
    modules = {row.get_attribute("data-module"): row.text for row in rows}
    assert set(modules) == {"auth", "admin", "system", "tasks"}
    assert all("healthy" in text and "started" in text for text in modules.values()), modules
    action_rows = browser.find_elements(By.CSS_SELECTOR, "#actions tr[data-action]")
    assert {"system_info", "lift_ban", "create_task"} <= {r.get_attribute("data-action") for r in action_rows}
    errors = browser.find_element(By.ID, "action-errors").text
    assert "broken.yaml:6" in errors and "metods" in errors, errors
    ban = browser.find_element(By.CSS_SELECTOR, f'#bans tr[data-ban="ip:{BANNED_IP}"]')
    screenshot(browser, "admin")

    ban.find_element(By.CSS_SELECTOR, "button.lift").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "no-bans"), "the ban to be gone from the page")
    assert server.am.limiter.list_bans() == []
    listed = server.app.test_cli_runner().invoke(args=["bans", "list"])
    assert listed.exit_code == 0 and "no active bans" in listed.output, listed.output
    screenshot(browser, "admin-ban-lifted")


def test_a_non_admin_is_refused(browser: Any, served: Callable[..., Served]) -> None:
    server = served()
    sign_in(browser, server.url, *USER)
    wait_for(browser, lambda d: "forbidden" in d.find_element(By.TAG_NAME, "body").text, "the refusal")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "The admin page is for admins only." in body and "Sign out" not in body
    screenshot(browser, "admin-refused")
    browser.get(server.url + "/admin")  # no session was given: the sign-in form again
    wait_for(browser, lambda d: d.find_elements(By.ID, "sign-in"), "the sign-in form")
    assert not browser.find_elements(By.ID, "signed-in-user")


def test_presence_counts_change_on_the_page_without_a_reload(
    browser: Any, served: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "PRESENCE_POLL_S", 0.5)  # the page asks every half second (3 s by default)
    server = served()
    sign_in(browser, server.url, *ADMIN)
    wait_for(browser, lambda d: d.find_elements(By.ID, "no-rooms"), "the empty presence table")
    marker = browser.execute_script("return window.keelMarker = Math.random();")  # gone on a reload

    user = server.am.jwt.users.by_username(USER[0])
    socket = Client(server.url, {"token": server.am.jwt.issue_pair(user)["access_token"]}).connect()
    try:
        assert socket.call("join_room", {"room": "lobby"})["ok"] is True
        row = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#presence tr[data-room="lobby"]'), "lobby")
        assert row[0].find_element(By.CSS_SELECTOR, ".count").text == "1"
        assert f"{USER[0]} #{user.id}" in row[0].find_element(By.CSS_SELECTOR, ".members").text
        screenshot(browser, "admin-presence")
        assert socket.call("leave_room", {"room": "lobby"})["ok"] is True
    finally:
        socket.close()
    wait_for(browser, lambda d: d.find_elements(By.ID, "no-rooms"), "the lobby to be gone from the page")
    assert browser.execute_script("return window.keelMarker;") == marker  # the same page all along
    assert "updated" in browser.find_element(By.ID, "presence-updated").text
    # the admin's tokens revoked elsewhere: the page says the session ended, and stops asking
    server.am.jwt.revoke_user_tokens(server.am.jwt.users.by_username(ADMIN[0]).id, actor="test")
    ended = "Your session ended: reload the page to sign in again."
    wait_for(browser, lambda d: d.find_element(By.ID, "presence-error").text == ended, "the session-ended note")
