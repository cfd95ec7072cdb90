"""The official JavaScript client, ``socket.io-client`` under Node.js, against Keel under
gunicorn + gevent: connect with a token, join, message, presence, and a refused connect.

``tests/websocket/js/`` pins the client in ``package-lock.json``; ``npm ci`` installs it the
first time (no ``node_modules``). Without Node.js and npm the test is skipped (a failure with
``REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import json
import subprocess
import uuid

from tests.websocket.conftest import JS, WsServer


def run_js(node: str, script: str, *args: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([node, script, *args], cwd=JS, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_official_javascript_client(ws_server: WsServer, node: str) -> None:
    ann, ben = ws_server.user(), ws_server.user()
    room = f"js-{uuid.uuid4().hex[:6]}"
    out = run_js(node, "client.mjs", ws_server.url, ann["token"], ben["token"], room)
    generic = "Authentication required or credentials invalid."
    assert out["refused"] == {"message": generic, "data": {"code": "unauthorized", "message": generic}}
    a_user = {"user_id": ann["id"], "username": ann["username"]}
    b_user = {"user_id": ben["id"], "username": ben["username"]}
    assert out["joinedA"] == {"ok": True, "room": room, "members": [a_user]}
    assert out["joinedB"] == {"ok": True, "room": room, "members": [a_user, b_user]}
    assert out["presenceJoined"] == {"room": room, "user": b_user, "status": "joined"}
    assert out["sent"]["ok"] is True
    assert out["received"] == {"room": room, "id": out["sent"]["id"], "from": b_user,
                               "message": {"text": "hello from js"}, "ts": out["sent"]["ts"]}
    assert out["forbidden"]["ok"] is False and out["forbidden"]["error"]["code"] == "forbidden"
    assert out["presenceLeft"] == {"room": room, "user": b_user, "status": "left"}
