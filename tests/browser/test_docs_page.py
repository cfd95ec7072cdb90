"""/docs (Swagger UI, local assets) in a real browser: every action grouped by module with a
readable summary, and a public action executed from the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.webdriver.common.by import By

from tests.browser.conftest import Served, screenshot, wait_for

GROUPS = ["admin", "auth", "system", "tasks", "keel"]  # the modules by name, then the framework


def test_docs_group_by_module_and_execute_a_public_action(browser: Any, served: Callable[..., Served]) -> None:
    server = served()
    browser.get(server.url + "/docs")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-tag")) == len(GROUPS), "the groups")
    tags = [e.get_attribute("data-tag") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-tag")]
    assert tags == GROUPS

    spec = server.app.test_client().get("/openapi.json").get_json()
    for tag in GROUPS:
        section = browser.find_element(By.ID, f"operations-tag-{tag}").find_element(By.XPATH, "./..")
        shown = [e.text for e in section.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")]
        expected = [op["summary"] for ops in spec["paths"].values() for op in ops.values() if op["tags"] == [tag]]
        assert sorted(shown) == sorted(expected), tag
        assert all(text and "." not in text.split()[0] and "module_" not in text for text in shown), shown
    names = {a["name"] for a in server.app.test_client().get("/actions").get_json()["actions"]}
    listed = {e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock[id^=operations-]")}
    for name in names:  # every action is on the page, under its module
        module = server.am.actions.get(name).module
        assert any(i.startswith(f"operations-{module}-{name}") for i in listed), (name, module)

    operation = browser.find_element(By.ID, "operations-system-system_info")
    assert "Version, uptime, modules" in operation.text
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait_for(browser, lambda d: operation.find_elements(By.CSS_SELECTOR, ".try-out__btn"), "Try it out")
    operation.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    wait_for(browser, lambda d: operation.find_elements(By.CSS_SELECTOR, "button.execute"), "Execute")
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = wait_for(
        browser,
        lambda d: operation.find_elements(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"),
        "the server's answer",
    )
    assert status[0].text.strip() == "200"
    body = operation.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description").text
    assert '"action": "system_info"' in body and '"success": true' in body
    browser.execute_script("arguments[0].scrollIntoView()", operation)
    screenshot(browser, "docs-system-info-executed", full_page=False)
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "docs")
