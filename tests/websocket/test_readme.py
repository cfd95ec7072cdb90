"""The README's "Real-time rooms" examples, replayed: the python-socketio one in this process,
the browser one with the official JavaScript client under Node.js."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import uuid
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.websocket.conftest import JS, PASSWORD

pytestmark = pytest.mark.filterwarnings(  # see tests/websocket/test_events.py
    r"ignore:Exception ignored in. <socket\.socket:pytest.PytestUnraisableExceptionWarning"
)


def realtime_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("<!-- section:realtime -->", 1)[1].split("<!-- /section:realtime -->", 1)[0]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", realtime_section(), re.S)


def test_the_python_example_prints_what_the_readme_shows(live: Any) -> None:
    srv = live(LOG_LEVEL="WARNING")  # the server's log lines would go to the captured stdout
    assert PASSWORD == "correct horse battery"
    srv.am.jwt.users.create("ada", PASSWORD)
    (code,) = blocks("python")
    shown = blocks("text")[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("http://127.0.0.1:8080", srv.url), "README.md", "exec"), {})  # noqa: S102
    assert out.getvalue() == shown


def test_the_browser_example_prints_what_the_readme_shows(live: Any, node: str) -> None:
    srv = live()
    user = srv.am.jwt.users.create("ada", PASSWORD)
    token = srv.am.jwt.issue_pair(user)["access_token"]
    (code,) = blocks("js")
    shown = blocks("text")[1]
    script = JS / f"readme-{uuid.uuid4().hex[:8]}.mjs"
    script.write_text('import { io } from "socket.io-client";\nconst accessToken = process.argv[2];\n'
                      + code.replace("http://127.0.0.1:8080", srv.url))
    try:
        done = subprocess.run([node, script.name, token], cwd=JS, capture_output=True, text=True, timeout=30,
                              check=False)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown
