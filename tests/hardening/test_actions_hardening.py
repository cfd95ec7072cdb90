"""Hardening (issue 12) items 12, 14, 17, 19, 20 and 22 (actions): each through the public surface."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.hardening.flask_cli import run_flask

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
INT64_MAX = 2**63 - 1
DUPLICATE = "names are unique across all files: rename or remove one of the definitions"

PROBE_MODULE = """
from core import BaseModule, action


class Probe(BaseModule):
    name = "probe"

    def initialize(self, app_manager):
        pass

    @action
    def echo(self, params, ctx):
        return params
"""

PROBE_ACTIONS = """\
version: 1
module: probe
actions:
  echo:
    handler: echo
    methods: [GET, POST]
    path: "<name>"
    auth: public
    params:
      s: {type: string}
      tags: {type: array, items: {type: string}}
      raw: {type: array}
      obj: {type: object, properties: {a: {type: string}, i: {type: integer}}}
      ids: {type: array, items: {type: integer}}
      n: {type: integer}
      small: {type: integer, minimum: 1, maximum: 5}
      wide: {type: integer, maximum: 1.0e+30}
      x: {type: number}
  loose:
    handler: echo
    methods: [GET, POST]
    auth: public
    additional_params: true
"""

BROKEN_MODULE = "from core import BaseModule, action\n\nclass Broken(BaseModule)\n    name = 'broken'\n"
BROKEN_ACTIONS = "version: 1\nactions:\n  broken_ping:\n    handler: ping\n    auth: public\n"


def _probe_app(make_app: Any, tmp_path: Path, **settings: Any) -> Any:
    mods = tmp_path / "mods"
    (mods / "probe").mkdir(parents=True, exist_ok=True)
    (mods / "probe" / "__init__.py").write_text(PROBE_MODULE)
    (mods / "probe" / "actions.yaml").write_text(PROBE_ACTIONS)
    acts = tmp_path / "acts"
    acts.mkdir(exist_ok=True)
    return make_app(MODULES_DIR=str(mods), ACTIONS_DIR=str(acts), **settings)


def _details(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True)[:300])
    error = response.get_json()["error"]
    assert error["code"] == "validation_error", error
    return list(error["details"])


def _admin_headers(app: Any, client: Any) -> dict[str, str]:
    app.extensions["keel"].jwt.users.create("root", PASSWORD, roles=("admin", "user"))
    login = client.post("/auth/login", json={"username": "root", "password": PASSWORD})
    assert login.status_code == 200, login.get_json()
    return {"Authorization": f"Bearer {login.get_json()['access_token']}"}


# --- item 12: NUL characters ------------------------------------------------------------------


def test_item_12_nul_in_query_string_and_path_values_is_a_validation_error(make_app: Any, tmp_path: Path) -> None:
    client = _probe_app(make_app, tmp_path).test_client()
    nul = "must not contain a NUL character (\\u0000)"
    assert _details(client.get("/actions/echo/a%00b")) == [{"param": "name", "message": nul}]  # path
    assert _details(client.get("/actions/echo/n?s=a%00")) == [{"param": "s", "message": nul}]  # query
    assert _details(client.get("/actions/echo/n?tags=ok&tags=b%00")) == [{"param": "tags[1]", "message": nul}]
    assert _details(client.get("/actions/echo/n?raw=%00")) == [{"param": "raw[0]", "message": nul}]  # no items
    # Undeclared parameters (additional_params: true) and their names obey the same rule.
    assert _details(client.get("/actions/loose?free=x%00")) == [{"param": "free", "message": nul}]
    assert _details(client.get("/actions/loose?free=x&free=%00")) == [{"param": "free[1]", "message": nul}]
    named = _details(client.get("/actions/loose?a%00b=1"))  # the answer itself carries no NUL
    assert named == [{"param": "a\\u0000b", "message": "is a parameter name that contains a NUL character"}]
    unknown = _details(client.get("/actions/echo/n?a%00b=1"))
    assert unknown == [{"param": "a\\u0000b", "message": "unknown parameter"}]
    # A JSON body never gets that far: the one body parser refuses a NUL anywhere in it.
    refused = client.post("/actions/echo/n", json={"obj": {"a": "x\x00"}})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_request"
    # Without NUL, the same values pass.
    ok = client.get("/actions/echo/n?s=a&tags=b&raw=c")
    assert ok.status_code == 200 and ok.get_json()["result"] == {"name": "n", "s": "a", "tags": ["b"], "raw": ["c"]}


def test_item_12_nul_in_protect_routes_declared_undeclared_and_path_variables(make_app: Any) -> None:
    """``@protect`` routes share the compiled validators and the parameter collection."""
    app = make_app()
    client = app.test_client()
    login = client.post("/auth/login?username=ro%00ot", json={"password": PASSWORD})  # declared
    assert _details(login) == [{"param": "username", "message": "must not contain a NUL character (\\u0000)"}]
    headers = _admin_headers(app, client)
    assert _details(client.get("/auth/me?x=a%00", headers=headers))[0]["param"] == "x"  # undeclared
    revoke = client.delete("/auth/api-keys/ab%00cd", headers=headers)  # the route's own path variable
    assert _details(revoke) == [{"param": "key_id", "message": "must not contain a NUL character (\\u0000)"}]


def test_item_12_nul_never_reaches_postgresql(make_app: Any, pg_config: dict[str, Any]) -> None:
    app = make_app(**pg_config)
    client = app.test_client()
    headers = _admin_headers(app, client)
    task = client.post("/actions/create_task", json={"title": "t"}, headers=headers)
    assert task.status_code == 201, task.get_json()
    task_id = task.get_json()["result"]["id"]
    comment = client.post(f"/actions/comment_task?text=a%00b&id={task_id}", headers=headers)
    assert _details(comment) == [{"param": "text", "message": "must not contain a NUL character (\\u0000)"}]
    key = client.post("/auth/api-keys?name=k%00", json={"scopes": []}, headers=headers)
    assert _details(key)[0]["param"] == "name"
    assert client.get("/health").get_json()["status"] == "healthy"


# --- item 14: integers beyond 64 bits -------------------------------------------------------------


def test_item_14_integers_default_to_the_signed_64_bit_range(make_app: Any, tmp_path: Path) -> None:
    client = _probe_app(make_app, tmp_path).test_client()
    too_big = f"must be <= {INT64_MAX} (integers are 64-bit)"
    assert _details(client.get(f"/actions/echo/n?n={2**63}")) == [{"param": "n", "message": too_big}]
    low = _details(client.get(f"/actions/echo/n?n={-(2**63) - 1}"))
    assert low == [{"param": "n", "message": f"must be >= {-(2**63)} (integers are 64-bit)"}]
    assert client.get(f"/actions/echo/n?n={INT64_MAX}").get_json()["result"]["n"] == INT64_MAX
    # A narrower declared bound is the only one reported; a wider one does not widen the range.
    assert _details(client.get(f"/actions/echo/n?small={2**64}")) == [{"param": "small", "message": "must be <= 5"}]
    assert _details(client.post("/actions/echo/n", json={"wide": 2**64})) == [{"param": "wide", "message": too_big}]
    # Nested and number-typed integers too (JSON values are not converted).
    nested = _details(client.post("/actions/echo/n", json={"ids": [1, 2**64], "obj": {"i": -(2**70)}}))
    assert sorted(d["param"] for d in nested) == ["ids[1]", "obj.i"]
    assert _details(client.post("/actions/echo/n", json={"x": 2**64}))[0]["param"] == "x"
    assert client.post("/actions/echo/n", json={"x": 1e30}).status_code == 200  # a float is fine


@pytest.mark.parametrize("user_id", [2**63, 2**64, -(2**63) - 1])
def test_item_14_revoke_user_tokens_beyond_64_bits_is_a_400_not_a_500(make_app: Any, user_id: int) -> None:
    app = make_app()  # SQLite: a Python int beyond 64 bits cannot even be bound
    client = app.test_client()
    headers = _admin_headers(app, client)
    response = client.post("/actions/revoke_user_tokens", json={"user_id": user_id}, headers=headers)
    assert _details(response)[0]["param"] == "user_id"
    task = client.get(f"/actions/get_task?id={user_id}", headers=headers)  # from the query string
    assert _details(task)[0]["param"] == "id"
    assert client.get(f"/actions/get_task?id={INT64_MAX}", headers=headers).status_code == 404


# --- item 17: an action name defined in two files -------------------------------------------------

FILE_A = "version: 1\nmodule: probe\nactions:\n  shared:\n    handler: echo\n  only_a:\n    handler: echo\n"
FILE_B = "version: 1\nmodule: probe\nactions:\n  only_b:\n    handler: echo\n  shared:\n    handler: echo\n"


def _names(app: Any) -> set[str]:
    return set(app.extensions["keel"].actions.registry.actions) - {"echo", "loose"}


@pytest.mark.parametrize("written_first", ["a.yaml", "b.yaml"])
def test_item_17_at_start_a_duplicated_name_refuses_both_files_whatever_their_order(
    make_app: Any, tmp_path: Path, written_first: str
) -> None:
    acts = tmp_path / "acts"
    acts.mkdir()
    files = {"a.yaml": FILE_A, "b.yaml": FILE_B}
    for name in sorted(files, key=lambda n: n != written_first):
        (acts / name).write_text(files[name])
    app = _probe_app(make_app, tmp_path)
    assert _names(app) == set()  # neither file is loaded: no order decides which one is "right"
    assert app.extensions["keel"].actions.status()["errors"] == [
        f"{acts / 'a.yaml'}:4:3: actions.shared: action 'shared' is also defined in {acts / 'b.yaml'}:6:3; {DUPLICATE}",
        f"{acts / 'b.yaml'}:6:3: actions.shared: action 'shared' is also defined in {acts / 'a.yaml'}:4:3; {DUPLICATE}",
    ]
    assert app.test_client().get("/health").get_json()["status"] == "degraded"


def test_item_17_reload_follows_the_same_rule_as_start(make_app: Any, tmp_path: Path) -> None:
    acts = tmp_path / "acts"
    acts.mkdir()
    (acts / "b.yaml").write_text(FILE_B)
    app = _probe_app(make_app, tmp_path)
    am = app.extensions["keel"]
    assert _names(app) == {"only_b", "shared"}
    (acts / "a.yaml").write_text(FILE_A)  # alphabetically first: the order decides nothing
    summary = am.actions.reload()
    # The same rule as at start: an error in both files, each naming the other ...
    assert sorted(summary["errors"]) == sorted(am.actions.status()["errors"])
    assert [e.split(":")[0] for e in am.actions.status()["errors"]] == [str(acts / "a.yaml"), str(acts / "b.yaml")]
    # ... and as for any error at reload, b.yaml keeps its last good version, a.yaml is not loaded.
    assert _names(app) == {"only_b", "shared"}
    assert am.actions.get("shared").file == str(acts / "b.yaml")
    # A restart now applies the rule with nothing serving yet: neither file (as at any start).
    assert _names(_probe_app(make_app, tmp_path)) == set()
    # Resolving the clash (in either file) loads both at the next reload.
    (acts / "a.yaml").write_text(FILE_A.replace("shared", "shared_a"))
    am.actions.reload()
    assert am.actions.status()["errors"] == []
    assert _names(app) == {"only_a", "shared_a", "only_b", "shared"}


def test_item_17_validate_checks_a_file_against_every_file_the_app_loads(make_app: Any, tmp_path: Path) -> None:
    app = make_app()  # the shipped actions/ and modules/*/actions.yaml
    new = tmp_path / "new.yaml"
    new.write_text(
        "version: 1\nmodule: system\nactions:\n  system_info:\n    handler: info\n"
        "  list_bans:\n    handler: info\n  fresh:\n    handler: info\n"
    )
    result = app.test_cli_runner().invoke(args=["actions", "validate", str(new)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{new}:4:3: actions.system_info: action 'system_info' is also defined in actions/system.yaml:7:3; {DUPLICATE}",
        f"{new}:6:3: actions.list_bans: action 'list_bans' is also defined in modules/admin/actions.yaml:4:3; "
        f"{DUPLICATE}",
        "2 error(s) in 1 file(s)",
    ]
    new.write_text("version: 1\nmodule: system\nactions:\n  fresh:\n    handler: info\n")
    ok = app.test_cli_runner().invoke(args=["actions", "validate", str(new)])
    assert ok.exit_code == 0 and ok.output.strip() == "OK: 1 file(s), 1 action(s)"


# --- item 19: actions of a disabled or failed module ------------------------------------------------


def _action_errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "core.managers.actions" and r.levelno >= logging.ERROR]


def test_item_19_a_disabled_modules_actions_are_disabled_not_errors(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = make_app(MODULES_DISABLED="tasks")  # modules/tasks/actions.yaml exists
    client = app.test_client()
    assert _action_errors_logged(caplog) == []
    health = client.get("/health").get_json()
    assert health["status"] == "healthy", health
    response = client.post("/actions/create_task", json={"title": "t"})
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "service_unavailable"
    assert "disabled" in response.get_json()["error"]["message"]
    listed = {a["name"]: a["status"] for a in client.get("/actions").get_json()["actions"]}
    assert listed["create_task"] == "disabled" and listed["system_info"] == "available"
    status = client.get("/actions/actions_status", headers=_admin_headers(app, client)).get_json()["result"]
    assert status["errors"] == []
    disabled = {d["action"]: d for d in status["disabled"]}
    assert disabled["create_task"] == {
        "action": "create_task",
        "module": "tasks",
        "reason": "module 'tasks' is disabled (MODULES_DISABLED)",
    }
    assert "system_info" not in disabled


def test_item_19_actions_of_a_module_that_cannot_be_imported_answer_503(
    make_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mods = tmp_path / "mods"
    (mods / "broken").mkdir(parents=True)
    (mods / "broken" / "__init__.py").write_text(BROKEN_MODULE)
    (mods / "broken" / "actions.yaml").write_text(BROKEN_ACTIONS)
    acts = tmp_path / "acts"
    acts.mkdir()
    (acts / "more.yaml").write_text("version: 1\nactions:\n  broken_more:\n    handler: broken.anything\n")
    app = _probe_app(make_app, tmp_path)
    client = app.test_client()
    assert _action_errors_logged(caplog) == []
    am = app.extensions["keel"]
    assert am.actions.status()["errors"] == []  # its YAML is not in error: its code is missing
    assert am.actions.health()["status"] == "healthy"  # /health is degraded by the module itself
    for name in ("broken_ping", "broken_more"):
        response = client.get(f"/actions/{name}")
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "service_unavailable"
    listed = {a["name"]: a["status"] for a in client.get("/actions").get_json()["actions"]}
    assert listed == {"broken_ping": "disabled", "broken_more": "disabled", "echo": "available", "loose": "available"}
    assert {d["action"]: d["reason"] for d in am.actions.status()["disabled"]} == {
        "broken_more": "module 'broken' is not running (failed)",
        "broken_ping": "module 'broken' is not running (failed)",
    }


# --- item 20: `flask actions validate` prints each error once ---------------------------------------


def _flask(tmp_path: Path, actions_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_flask(tmp_path, *args, ACTIONS_DIR=str(actions_dir))


def test_item_20_actions_validate_and_list_print_each_error_once(tmp_path: Path) -> None:
    acts = tmp_path / "acts"
    acts.mkdir()
    (acts / "system.yaml").write_text((ROOT / "actions" / "system.yaml").read_text())
    (acts / "bad.yaml").write_text("version: 1\nmodule: system\nactions:\n  oops:\n    handler: nope\n")
    error = f"{acts / 'bad.yaml'}:5:14: handler: module 'system' has no @action method 'nope'"
    validate = _flask(tmp_path, acts, "actions", "validate")
    assert validate.returncode == 1
    output = validate.stdout + validate.stderr
    assert output.count(error) == 1, output
    assert " ERROR " not in output
    listing = _flask(tmp_path, acts, "actions", "list")
    assert listing.returncode == 0
    assert (listing.stdout + listing.stderr).count(error) == 1, listing.stderr
    verbose = _flask(tmp_path, acts, "actions", "-v", "list")  # -v shows the start-up log lines too
    assert " INFO " in verbose.stderr and "bad.yaml rejected" in verbose.stderr


# --- item 22: the file's module in actions_status; /docs/ loads its assets -------------------------


def test_item_22_actions_status_reports_the_module_a_file_declares(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    status = client.get("/actions/actions_status", headers=_admin_headers(app, client)).get_json()["result"]
    modules = {f["path"]: f["module"] for f in status["files"]}
    assert modules["actions/system.yaml"] == "system"  # declared with `module: system`
    assert modules["modules/admin/actions.yaml"] == "admin"  # implied by where it is


@pytest.mark.parametrize("page", ["/docs", "/docs/"])
def test_item_22_docs_pages_load_their_assets_and_the_document(make_app: Any, page: str) -> None:
    """``/docs/`` is served (tests/hardening/test_http_hardening.py); its relative links resolve too."""
    client = make_app().test_client()
    html = client.get(page).get_data(as_text=True)
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(links) == 4
    for link in links:
        with client.get(urljoin(f"http://localhost{page}", link)) as response:
            assert response.status_code == 200, (page, link)
    with client.get(urljoin(f"http://localhost{page}", links[-1])) as response:
        script = response.get_data(as_text=True)
    # The document is found from the script's own URL (/docs/keel-init.js → /openapi.json), not the page's.
    assert 'new URL("openapi.json", new URL("..", document.currentScript.src))' in script
