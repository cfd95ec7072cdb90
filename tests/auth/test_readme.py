"""Replays the README's Authentication section (every command, in order) on a test app."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("<!-- section:auth -->") : text.index("<!-- /section:auth -->")]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return commands


def run_curl(client: Any, command: str, env: dict[str, str]) -> tuple[int, Any, int]:
    expected = int(re.search(r"#\s*→\s*(\d{3})", command).group(1))  # type: ignore[union-attr]
    line = command.split("#", 1)[0]
    for name, value in sorted(env.items(), key=lambda kv: -len(kv[0])):
        line = line.replace(f"${name}", value)
    args = shlex.split(line)
    assert args[0] == "curl"
    method, headers, data, url = "GET", {}, None, None
    i = 1
    while i < len(args):
        if args[i] == "-X":
            method, i = args[i + 1], i + 2
        elif args[i] == "-H":
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif args[i] == "-d":
            data, i = args[i + 1], i + 2
        else:
            url, i = args[i], i + 1
    assert url is not None and url.startswith("http://127.0.0.1:8080/")
    path = url.removeprefix("http://127.0.0.1:8080")
    resp = client.open(path, method=method, headers=headers, data=data)
    return resp.status_code, resp.get_json(), expected


def lift_a_ban(app: Any, client: Any, command: str) -> None:
    """``flask --app app bans lift ip ADDRESS``, after five wrong passwords from ADDRESS banned
    it (the README's words): the address logs in again."""
    argv = shlex.split(command)
    assert argv[:6] == ["flask", "--app", "app", "bans", "lift", "ip"], command
    address = {"environ_base": {"REMOTE_ADDR": argv[6]}}
    wrong = {"username": "alice", "password": "wrong-password"}
    codes = [client.post("/auth/login", json=wrong, **address).status_code for _ in range(6)]
    assert codes == [401] * 5 + [403], codes
    result = app.test_cli_runner().invoke(args=argv[3:])
    assert result.exit_code == 0, result.output
    right = {"username": "alice", "password": "correct horse battery"}
    assert client.post("/auth/login", json=right, **address).status_code == 200


def test_readme_auth_section_replays(auth_app: Any) -> None:
    # the settings' defaults (a development machine's): loopback exempt, 5 violations ban
    app = auth_app(BAN_AFTER_VIOLATIONS=5, BAN_EXEMPT_NETWORKS=None)
    client = app.test_client()
    runner = app.test_cli_runner()
    env: dict[str, str] = {}
    commands = section_commands()
    assert len([c for c in commands if c.startswith("curl")]) >= 10
    assert any(c.startswith("flask --app app bans lift") for c in commands)
    for command in commands:
        if command.startswith("flask"):
            lift_a_ban(app, client, command)
            continue
        if command.startswith("echo"):
            password, _, cli = command.partition("|")
            argv = shlex.split(cli)
            assert argv[:3] == ["flask", "--app", "app"]
            result = runner.invoke(args=argv[3:], input=shlex.split(password)[1] + "\n")
            assert result.exit_code == 0, result.output
            continue
        status, body, expected = run_curl(client, command, env)
        assert status == expected, (command, status, body)
        if "invalid_credentials" in command:
            assert body["error"]["code"] == "invalid_credentials"
        body = body or {}
        for field, var in (("access_token", "ACCESS"), ("refresh_token", "REFRESH"), ("key", "KEY")):
            if field in body:
                env[var] = body[field]
        if "api_key" in body:
            env["KEY_ID"] = body["api_key"]["id"]
    assert {"ACCESS", "REFRESH", "KEY", "KEY_ID"} <= set(env)
