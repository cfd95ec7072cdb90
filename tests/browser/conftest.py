"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium, against
an app served on 127.0.0.1 by a thread of this process (so a test reaches ``am`` directly).

Without the browser the tests skip, or fail under ``REQUIRE_SERVICES=1`` (CI: ``.ci/run``
installs both packages when they are missing). Screenshots go to ``var/artifacts/browser/``
(git-ignored), one per page a test looks at.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.conftest import ROOT, unavailable

ARTIFACTS = ROOT / "var" / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The flags this machine needs (no GPU, no sandbox as root, no connection to Google's services:
# the network is closed) and nothing that outlives the test (a fresh profile).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
WAIT_S = 10.0
ADMIN = ("boss", "correct-horse-battery")
USER = ("pleb", "ordinary-password")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (about a second to start)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            unavailable(f"{path} not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium not installed (requirements-dev.txt)")
    profile = tempfile.mkdtemp(prefix="keel-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Served:
    url: str
    app: Any

    @property
    def am(self) -> Any:
        return self.app.extensions["keel"]


@pytest.fixture
def served(make_app: Callable[..., Any], browser: Any) -> Iterator[Callable[..., Served]]:
    """``served(**settings)``: a fresh app with an admin (``ADMIN``) and a user (``USER``),
    served over HTTP on a free port; the browser starts with no cookies."""
    servers: list[Any] = []

    def factory(**overrides: Any) -> Served:
        app = make_app(**overrides)
        users = app.extensions["keel"].jwt.users
        users.create(*ADMIN, roles=("admin",))
        users.create(*USER)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="keel-browser-test-server", daemon=True)
        thread.start()
        servers.append((server, thread))
        browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
        return Served(f"http://127.0.0.1:{server.server_port}", app)

    yield factory
    for server, thread in servers:
        server.shutdown()
        thread.join(5)
        server.server_close()


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, f"waited {WAIT_S}s for {what}")


def screenshot(driver: Any, name: str, *, full_page: bool = True) -> Path:
    """``var/artifacts/browser/<name>.png``: the whole page, or what the window shows."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if not full_page:
        assert driver.save_screenshot(str(path)), path
        return path
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
    options = {"format": "png", "captureBeyondViewport": True, "clip": clip}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", options)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
