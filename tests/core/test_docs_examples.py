"""The examples of docs/auth.md, docs/limits.md and docs/websocket.md, replayed against the app.

- Every ```` ```console ```` block of those pages is a session: ``$ curl …`` and ``$ flask --app
  app …`` commands, each followed by what it prints. ``VAR=$(curl … | jq -r .field)`` keeps a
  field for later ``$VAR``s. ``curl -i`` output starts with the status line and the headers the
  page shows (each must be in the response, with that value), then the JSON body. A JSON body
  must equal the response's, ``"…"`` standing for any value.
- Every ```` ```text ```` block of docs/websocket.md that starts with ``ada →`` is a Socket.IO
  session: ``name → event {payload}`` sends (through a connection of the user ``name``, made
  with a token of a fresh login), ``name ← {…}`` is the acknowledgement, ``name ⇐ event {…}``
  an event that connection received since the last ``⇐`` line.
- Console blocks of a page run in one session (one app, the kept values) until a block preceded
  by an HTML comment ``<!-- replay: {…} -->`` starts a new one; the comment gives the
  ``settings`` of its app (the page's text says the same in words) and ``client_ip``, the
  address of the HTTP client (default 127.0.0.1, which the tests do not exempt from limits).

A block that this test cannot replay fails it: the pages show no command that no test ran.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
PASSWORD = "correct horse battery"
BLOCK = re.compile(r"(?:<!-- replay: (\{.*?\}) -->\n)?```(console|text)\n(.*?)```", re.S)


def blocks(page: str, lang: str) -> list[tuple[dict[str, Any] | None, str]]:
    """``(replay settings or None, text)`` of each ``lang`` block of ``page``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [(json.loads(conf) if conf else None, body) for conf, kind, body in BLOCK.findall(text) if kind == lang]


def matches(shown: Any, actual: Any) -> bool:
    """``shown`` equals ``actual``, ``"…"`` standing for any value (and for any rest of a string
    ending in ``…``)."""
    if shown == "…":
        return True
    if isinstance(shown, str) and shown.endswith("…") and isinstance(actual, str):
        return actual.startswith(shown[:-1])
    if isinstance(shown, dict):
        return (
            isinstance(actual, dict)
            and shown.keys() == actual.keys()
            and all(matches(shown[k], actual[k]) for k in shown)
        )
    if isinstance(shown, list):
        return isinstance(actual, list) and len(shown) == len(actual) and all(map(matches, shown, actual))
    return bool(shown == actual)


def line_matches(shown: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.split("…"))
    return re.fullmatch(pattern, actual) is not None


def commands(body: str) -> Iterator[tuple[str, list[str]]]:
    """``(command, printed lines)`` of a console block; ``#`` lines are comments."""
    command, out = None, []
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("$ "):
            if command is not None:
                yield command, out
            command, out = line[2:], []
        elif command is not None:
            out.append(line)
    if command is not None:
        yield command, out


class Session:
    """One console block against one app."""

    def __init__(self, app: Any, client_ip: str) -> None:
        self.app = app
        self.client = app.test_client()
        self.environ = {"REMOTE_ADDR": client_ip}
        self.vars: dict[str, str] = {}

    def expand(self, text: str) -> str:
        return re.sub(r"\$([A-Z_]+)", lambda m: self.vars[m[1]], text)

    def run(self, command: str, out: list[str]) -> None:
        keep = re.fullmatch(r"([A-Z_]+)=\$\((.*) \| jq -r '?\.([a-z_.\[\]0-9]+)'?\)", command)
        if keep:
            name, command, field = keep.groups()
            body = self.curl(command, [])
            value: Any = body
            for part in re.findall(r"[a-z_]+|\[\d+\]", field):
                value = value[int(part[1:-1])] if part.startswith("[") else value[part]
            self.vars[name] = str(value)
            return
        if command.startswith("curl "):
            self.curl(command, out)
        elif command.startswith("echo ") or command.startswith("flask "):
            self.flask(command, out)
        else:
            raise AssertionError(f"cannot replay {command!r}")

    def curl(self, command: str, out: list[str]) -> Any:
        args = shlex.split(self.expand(command))
        method = args[args.index("-X") + 1] if "-X" in args else "GET"
        (url,) = [a for a in args if a.startswith("http://127.0.0.1:8080")]
        headers = dict(args[j + 1].split(": ", 1) for j, a in enumerate(args) if a == "-H")
        data = args[args.index("-d") + 1] if "-d" in args else None
        response = self.client.open(
            url[len("http://127.0.0.1:8080") :],
            method=method,
            data=data,
            headers=headers,
            environ_base=self.environ,
        )
        body = response.get_json(silent=True)
        where = f"{command}\n→ {response.status_code} {response.get_data(as_text=True)[:400]}"
        if "-i" in args or "-si" in args:
            status = out.pop(0)
            assert status.split()[1] == str(response.status_code), where
            while out and out[0]:
                name, value = out.pop(0).split(": ", 1)
                assert line_matches(value, response.headers.get(name, "<missing>")), (name, where)
            out = out[1:]
        if out:
            (shown,) = out
            assert matches(json.loads(shown), body), where
        return body

    def flask(self, command: str, out: list[str]) -> None:
        stdin = None
        if command.startswith("echo "):
            echoed, command = command.split(" | ", 1)
            stdin = shlex.split(echoed)[1] + "\n"
        args = shlex.split(self.expand(command))
        assert args[:3] == ["flask", "--app", "app"], command
        result = self.app.test_cli_runner().invoke(args=args[3:], input=stdin)
        log = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")  # the app's log lines
        printed = [line for line in result.output.splitlines() if not log.match(line)]
        assert len(printed) == len(out) and all(map(line_matches, out, printed)), (command, result.output)


@pytest.mark.parametrize("page", ["auth.md", "limits.md", "websocket.md"])
def test_console_examples_answer_as_shown(page: str, make_app: Callable[..., Any], tmp_path: Path) -> None:
    session: Session | None = None
    replayed = 0
    for n, (conf, body) in enumerate(blocks(page, "console")):
        if session is None or conf is not None:
            conf = dict(conf or {})
            settings = {"DATABASE_URL": f"sqlite:///{tmp_path / f'session{n}.db'}", **conf.pop("settings", {})}
            session = Session(make_app(**settings), conf.pop("client_ip", "127.0.0.1"))
        for command, out in commands(body):
            session.run(command, out)
            replayed += 1
    assert replayed or page == "websocket.md"


# --- Socket.IO sessions (docs/websocket.md) ----------------------------------------------------

STEP = re.compile(r"(\w+) (→|←|⇐) ?(\w+)? ?(.*)")


def test_socketio_examples_answer_as_shown(make_app: Callable[..., Any], tmp_path: Path) -> None:
    sessions = [(conf, body) for conf, body in blocks("websocket.md", "text") if body.startswith("ada →")]
    assert sessions
    for n, (conf, body) in enumerate(sessions):
        app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / f'ws{n}.db'}", **(conf or {}).get("settings", {}))
        am = app.extensions["keel"]
        http = app.test_client()
        clients: dict[str, Any] = {}
        received: dict[str, list[dict[str, Any]]] = {}
        answer: dict[str, Any] = {}
        for line in body.splitlines():
            m = STEP.fullmatch(line)
            assert m is not None, line
            name, arrow, event, data = m.groups()
            if name not in clients:
                am.jwt.users.create(name, PASSWORD)
                token = http.post("/auth/login", json={"username": name, "password": PASSWORD}).get_json()
                clients[name] = am.websocket.socketio.test_client(
                    app, auth={"token": token["access_token"]}, flask_test_client=http
                )
                assert clients[name].is_connected(), name
                received[name] = []
            client = clients[name]
            if arrow == "→":
                args = [json.loads(data)] if data else []
                answer[name] = client.emit(event, *args, callback=True)
            elif arrow == "←":
                assert matches(json.loads(f"{event or ''} {data}".strip()), answer.pop(name)), line
            else:
                received[name] += [p for p in client.get_received() if p["name"] != "connect"]
                got = received[name].pop(0)
                assert got["name"] == event and len(got["args"]) == 1, (line, got)
                assert matches(json.loads(data), got["args"][0]), (line, got)
        for client in clients.values():
            client.disconnect()


def test_the_server_api_example_does_what_the_page_says(make_app: Callable[..., Any]) -> None:
    page = (DOCS / "websocket.md").read_text(encoding="utf-8")
    (code, printed) = re.findall(r"```python\n(from core import app_manager.*?)```\n\n```text\n(.*?)```", page, re.S)[0]
    app = make_app()
    am = app.extensions["keel"]
    http = app.test_client()
    clients = {}
    for name in ("ada", "bob"):
        am.jwt.users.create(name, PASSWORD)
        token = http.post("/auth/login", json={"username": name, "password": PASSWORD}).get_json()["access_token"]
        clients[name] = am.websocket.socketio.test_client(app, auth={"token": token}, flask_test_client=http)
        assert clients[name].emit("join_room", {"room": "team"}, callback=True)["ok"]
    clients["ada"].get_received()
    clients["bob"].get_received()
    out = io.StringIO()
    with app.app_context(), contextlib.redirect_stdout(out):
        exec(compile(code, "docs/websocket.md", "exec"), {})  # noqa: S102
    assert out.getvalue() == printed
    notice = {"name": "notice", "args": [{"text": "deploy at 5"}], "namespace": "/"}
    bob = {"user_id": 2, "username": "bob"}
    assert clients["ada"].get_received() == [
        notice,
        {"name": "presence", "args": [{"room": "team", "user": bob, "status": "left"}], "namespace": "/"},
    ]
    assert not clients["bob"].is_connected()
    # the test client keeps what it got before the server dropped it
    assert [p["name"] for p in clients["bob"].queue] == ["notice", "force_disconnect"]
    clients["ada"].disconnect()


@pytest.mark.parametrize("lang", ["python", "js"])
def test_the_client_examples_are_the_ones_the_websocket_tests_run(lang: str) -> None:
    """docs/websocket.md's client examples are the README's, which tests/websocket/test_readme.py
    runs: the Python one against a live server, the browser one with the official client under
    Node.js."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    page = (DOCS / "websocket.md").read_text(encoding="utf-8")
    inside = r"(?:(?!```).)*"  # a block's text
    example = re.compile(rf"```{lang}\n(?!from core){inside}```\n\n```text\n{inside}```", re.S)
    (shown,) = example.findall(page)
    assert shown in example.findall(readme)


def test_every_page_is_listed() -> None:
    """The README links the reference pages these examples belong to."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in ("auth.md", "limits.md", "websocket.md"):
        assert f"(docs/{page})" in readme, page
