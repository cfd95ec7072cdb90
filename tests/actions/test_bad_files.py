"""SPEC §4.2: every malformed action file is rejected with ``path:line:col: key: message``,
all of its errors at once, and the last good version of the file keeps serving."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from core.actions import MAX_FILE_BYTES, display_path

from .conftest import GOOD_DEMO, write

MARK = "§"
H = "version: 1\nmodule: demo\nactions:\n"

# (id, file text with § before the offending node, key path, part of the message)
CASES: list[tuple[str, str, str, str]] = [
    ("syntax-unclosed-flow", H + "  echo: {handler: echo, methods: [GET]\n§", "yaml", "syntax error"),
    ("syntax-bad-indent", H + "  echo:\n    handler: echo\n   §auth: public\n", "yaml", "syntax error"),
    (
        "duplicate-key",
        H + "  echo:\n    handler: echo\n    §handler: echo\n",
        "yaml",
        "duplicate key 'handler' (first defined at line 5)",
    ),
    (
        "duplicate-action-in-file",
        H + "  echo:\n    handler: echo\n  §echo:\n    handler: echo\n",
        "yaml",
        "duplicate key 'echo'",
    ),
    ("unknown-top-key", "version: 1\nmodule: demo\n§actoins: {}\nactions: {}\n", "actoins", "did you mean 'actions'?"),
    (
        "unknown-action-key",
        H + "  echo:\n    handler: echo\n    §handlr: echo\n",
        "handlr",
        "did you mean 'handler'?",
    ),
    (
        "unknown-param-keyword",
        H + "  echo:\n    handler: echo\n    params:\n      t: {type: string, §maxLenght: 3}\n",
        "params.t.maxLenght",
        "did you mean 'maxLength'?",
    ),
    (
        "wrong-type-methods",
        H + "  echo:\n    handler: echo\n    methods: §GET\n",
        "methods",
        "must be a list of strings, got string 'GET'",
    ),
    (
        "wrong-param-type",
        H + "  echo:\n    handler: echo\n    params:\n      priority: {type: §int}\n",
        "params.priority.type",
        "'int' is not one of string, integer, number, boolean, array, object (did you mean 'integer'?)",
    ),
    (
        "wrong-type-flag",
        H + '  echo:\n    handler: echo\n    deprecated: §"maybe"\n',
        "deprecated",
        "must be true or false",
    ),
    (
        "wrong-type-required",
        H + "  echo:\n    handler: echo\n    params:\n      t: {type: string, required: §3}\n",
        "params.t.required",
        "must be true or false, got integer 3",
    ),
    ("missing-handler", H + "  echo:\n    §auth: public\n", "handler", "required key missing"),
    (
        "handler-does-not-exist",
        H + "  echo:\n    handler: §ecoh\n",
        "handler",
        "module 'demo' has no @action method 'ecoh' (did you mean 'echo'?)",
    ),
    (
        "handler-not-marked",
        H + "  echo:\n    handler: §not_marked\n",
        "handler",
        "demo.not_marked is not marked @action",
    ),
    (
        "handler-unknown-module",
        H + "  echo:\n    handler: §nope.echo\n",
        "handler",
        "no module named 'nope'",
    ),
    (
        "handler-without-module",
        "version: 1\nactions:\n  echo:\n    handler: §echo\n",
        "handler",
        "no module: add 'module: <name>'",
    ),
    ("path-collision", H + '  echo:\n    handler: echo\n    path: §"<int:id>/<id>"\n', "path", "collides"),
    (
        "path-bad-converter",
        H + '  echo:\n    handler: echo\n    path: §"<path:rest>"\n',
        "path",
        "converter 'path'",
    ),
    (
        "path-type-mismatch",
        H + '  echo:\n    handler: echo\n    path: "<int:id>"\n    params:\n      id: §{type: string}\n',
        "params.id.type",
        "path parameter <int:id> is of type integer",
    ),
    (
        "invalid-method",
        H + "  echo:\n    handler: echo\n    methods: [GET, §FETCH]\n",
        "methods[1]",
        "'FETCH' is not one of GET, POST, PUT, PATCH, DELETE",
    ),
    (
        "lowercase-method",
        H + "  echo:\n    handler: echo\n    methods: [§get]\n",
        "methods[0]",
        "did you mean 'GET'?",
    ),
    (
        "default-violates-schema",
        H + "  echo:\n    handler: echo\n    params:\n      p: {type: integer, maximum: 5, default: §9}\n",
        "params.p.default",
        "default violates the parameter's own schema: default must be <= 5",
    ),
    (
        "default-wrong-type",
        H + "  echo:\n    handler: echo\n    params:\n      p: {type: array, default: §oops}\n",
        "params.p.default",
        "default must be an array",
    ),
    (
        "min-greater-than-max",
        H + "  echo:\n    handler: echo\n    params:\n      p: {type: integer, minimum: §10, maximum: 5}\n",
        "params.p.minimum",
        "minimum 10 is greater than maximum 5",
    ),
    (
        "minlength-greater-than-maxlength",
        H + "  echo:\n    handler: echo\n    params:\n      p: {type: string, minLength: §8, maxLength: 2}\n",
        "params.p.minLength",
        "minLength 8 is greater than maxLength 2",
    ),
    (
        "invalid-regex",
        H + '  echo:\n    handler: echo\n    params:\n      p: {type: string, pattern: §"[a-"}\n',
        "params.p.pattern",
        "invalid regular expression",
    ),
    (
        "keyword-not-for-type",
        H + "  echo:\n    handler: echo\n    params:\n      p: {type: integer, §minLength: 1}\n",
        "params.p.minLength",
        "'minLength' applies to strings, not to type integer",
    ),
    (
        "unknown-format",
        H + "  echo:\n    handler: echo\n    params:\n      p: {type: string, format: §emial}\n",
        "params.p.format",
        "did you mean 'email'?",
    ),
    (
        "enum-value-wrong-type",
        H + "  echo:\n    handler: echo\n    params:\n      p: {type: integer, enum: [1, §two]}\n",
        "params.p.enum[1]",
        "enum value must be an integer",
    ),
    (
        "tag-python-object",
        H + '  echo:\n    handler: echo\n    description: §!!python/object/apply:os.system ["true"]\n',
        "yaml",
        "YAML tags are not allowed (tag:yaml.org,2002:python/object/apply:os.system)",
    ),
    (
        "tag-binary",
        H + "  echo:\n    handler: echo\n    description: §!!binary aGVsbG8=\n",
        "yaml",
        "YAML tags are not allowed",
    ),
    (
        "tag-custom",
        H + "  echo:\n    handler: echo\n    description: §!mytag hello\n",
        "yaml",
        "YAML tags are not allowed (!mytag)",
    ),
    ("tag-str", H + "  echo:\n    handler: echo\n    description: §!!str 12\n", "yaml", "YAML tags are not allowed"),
    ("version-missing", "§module: demo\nactions: {}\n", "version", "required key missing: add 'version: 1'"),
    ("version-unsupported", "version: §2\nmodule: demo\nactions: {}\n", "version", "unsupported version integer 2"),
    (
        "actions-not-a-mapping",
        "version: 1\nmodule: demo\nactions: §[echo]\n",
        "actions",
        "must be a mapping, got a list",
    ),
    ("top-level-list", "§- version: 1\n", "(top level)", "must be a mapping, got a list"),
    ("invalid-action-name", H + "  §Create-Task:\n    handler: echo\n", "actions.Create-Task", "is not valid"),
    (
        "bad-auth",
        H + "  echo:\n    handler: echo\n    auth: §pubic\n",
        "auth",
        "'pubic' is not one of public, user, api_key, any (did you mean 'public'?)",
    ),
    (
        "bad-rate-limit",
        H + '  echo:\n    handler: echo\n    rate_limit: §"ten per minute"\n',
        "rate_limit",
        "is not a rate limit",
    ),
    (
        "non-string-key",
        H + "  echo:\n    handler: echo\n    params:\n      §on: {type: boolean}\n",
        "yaml",
        "key true is not a string",
    ),
    ("two-documents", "version: 1\nactions: {}\n§---\nversion: 1\n", "yaml", "only one YAML document per file"),
    ("empty-file", "§", "file", "is empty"),
    ("undefined-alias", H + "  echo:\n    handler: §*nothing\n", "yaml", "alias *nothing has no anchor before it"),
]


def locate(text: str) -> tuple[str, int, int]:
    index = text.index(MARK)
    clean = text.replace(MARK, "", 1)
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return clean, line, col


def assert_rejected_and_serving(app: Any, path: Path, line: int, col: int, key: str, message: str) -> list[str]:
    am = app.extensions["keel"]
    am.actions.reload()
    errors = am.actions.status()["errors"]
    prefix = f"{path}:{line}:{col}: {key}: "
    assert any(e.startswith(prefix) and message in e for e in errors), f"want {prefix}...{message}\ngot {errors}"
    # The last good version keeps serving, and the app says it is degraded.
    response = app.test_client().get("/actions/echo?title=still")
    assert response.status_code == 200, response.json
    assert response.json["result"]["params"]["title"] == "still"
    health = am.actions.health()
    assert health["status"] == "degraded"
    assert health["reload_errors_total"] >= 1
    return errors


@pytest.mark.parametrize(("text", "key", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_file_rejected_at_exact_position(
    actions_app: Any, actions_dir: Path, text: str, key: str, message: str
) -> None:
    app = actions_app()
    path = actions_dir / "demo.yaml"
    clean, line, col = locate(text)
    write(path, clean)
    assert_rejected_and_serving(app, path, line, col, key, message)


def test_more_than_100_aliases(actions_app: Any, actions_dir: Path) -> None:
    app = actions_app()
    lines = [H, "  echo:\n    handler: echo\n    examples:\n      - &a {description: x}\n"]
    lines += ["      - *a\n"] * 101
    text = "".join(lines)
    path = write(actions_dir / "demo.yaml", text)
    # The 101st alias is on line 8 + 100 = 108, column 9.
    assert_rejected_and_serving(app, path, 108, 9, "yaml", "more than 100 aliases")


def test_alias_bomb_expansion_is_bounded(actions_app: Any, actions_dir: Path) -> None:
    app = actions_app()
    text = "version: 1\nmodule: demo\nx0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        text += f"x{i}: &a{i} [{', '.join([prev] * 10)}]\n"
    text += "actions: {}\n"
    path = write(actions_dir / "demo.yaml", text)
    # x4 (line 7) holds 10 aliases of 11,111 nodes each: after about 12,000 nodes on lines 3-6,
    # its 8th alias (column 10 + 7 * 5 = 45) crosses 100,000.
    errors = assert_rejected_and_serving(app, path, 7, 45, "yaml", "aliases expand to more than 100000 nodes")
    assert len(errors) == 1


def test_nesting_deeper_than_50(actions_app: Any, actions_dir: Path) -> None:
    app = actions_app()
    text = H + "  echo:\n    handler: echo\n    returns: " + "[" * 60 + "]" * 60 + "\n"
    path = write(actions_dir / "demo.yaml", text)
    # top level (1), actions (2), echo (3): the 48th "[" opens level 51, at column 14 + 47 = 61.
    assert_rejected_and_serving(app, path, 6, 61, "yaml", "nesting deeper than 50 levels")


def test_file_over_256_kib(actions_app: Any, actions_dir: Path) -> None:
    app = actions_app()
    text = GOOD_DEMO + "# " + "x" * MAX_FILE_BYTES + "\n"
    path = write(actions_dir / "demo.yaml", text)
    assert_rejected_and_serving(app, path, 1, 1, "file", f"action files are limited to {MAX_FILE_BYTES} bytes")


def test_non_utf8_bytes(actions_app: Any, actions_dir: Path) -> None:
    app = actions_app()
    raw = (H + "  echo:\n    handler: echo\n    description: caf").encode() + b"\xe9\n"
    path = write(actions_dir / "demo.yaml", raw)
    # "    description: caf" is 20 characters: the bad byte is column 21.
    assert_rejected_and_serving(app, path, 6, 21, "file", "byte 0xe9 is not valid UTF-8")


def test_symlink_leaving_the_actions_directory(actions_app: Any, actions_dir: Path, tmp_path: Path) -> None:
    app = actions_app()
    outside = tmp_path / "outside.yaml"
    outside.write_text(GOOD_DEMO.replace("Echo the parameters back.", "from outside"))
    path = actions_dir / "demo.yaml"
    path.unlink()
    os.symlink(outside, path)
    assert_rejected_and_serving(app, path, 1, 1, "file", f"is a symlink that leaves {actions_dir}")


def test_symlink_inside_the_directory_is_fine(actions_app: Any, actions_dir: Path) -> None:
    (actions_dir / ".real").mkdir()
    (actions_dir / ".real" / "demo.yaml").write_text(GOOD_DEMO)
    os.symlink(actions_dir / ".real" / "demo.yaml", actions_dir / "demo.yaml")
    app = actions_app(files={})
    am = app.extensions["keel"]
    assert am.actions.status()["errors"] == []
    assert f"{actions_dir}/demo.yaml" in [f["path"] for f in am.actions.status()["files"]]
    assert app.test_client().get("/actions/echo?title=x").status_code == 200


DUPLICATE = "names are unique across all files: rename or remove one of the definitions"


def test_action_defined_in_two_files_names_both(actions_app: Any, actions_dir: Path) -> None:
    app = actions_app()
    demo = actions_dir / "demo.yaml"
    other = write(actions_dir / "other.yaml", H + "  ping:\n    handler: echo\n  echo:\n    handler: echo\n")
    am = app.extensions["keel"]
    am.actions.reload()
    # An error in both files, each naming the other (SPEC §4.2) ...
    assert am.actions.status()["errors"] == [
        f"{demo}:4:3: actions.echo: action 'echo' is also defined in {other}:6:3; {DUPLICATE}",
        f"{other}:6:3: actions.echo: action 'echo' is also defined in {demo}:4:3; {DUPLICATE}",
    ]
    # ... and, like any error at reload, the new file is not loaded (ping is not served) while
    # the file that was serving echo keeps its last good version.
    client = app.test_client()
    assert client.get("/actions/ping").status_code == 404
    assert client.get("/actions/echo?title=x").status_code == 200
    # Removing the clash from the first file lets both load on the next reload.
    write(demo, H + "  create:\n    handler: create\n    auth: public\n")
    am.actions.reload()
    assert am.actions.status()["errors"] == []
    assert client.get("/actions/ping").status_code == 401  # loaded now (auth: any, no credentials)


def test_at_boot_a_name_in_two_files_loads_neither(actions_app: Any, modules_dir: Path) -> None:
    """At start no file is serving yet: the module's file and the admin's file are both refused
    (the same rule as at reload, whatever the files' order)."""
    clash = GOOD_DEMO + "  broken_ping:\n    handler: echo\n"
    app = actions_app(files={"demo.yaml": clash})
    am = app.extensions["keel"]
    module_file = modules_dir / "broken" / "actions.yaml"
    demo = f"{am.settings['ACTIONS_DIR']}/demo.yaml"
    line = GOOD_DEMO.count("\n") + 1  # the appended action's name
    assert am.actions.status()["errors"] == [
        f"{module_file}:3:3: actions.broken_ping: action 'broken_ping' is also defined in {demo}:{line}:3; {DUPLICATE}",
        f"{demo}:{line}:3: actions.broken_ping: action 'broken_ping' is also defined in {module_file}:3:3; {DUPLICATE}",
    ]
    assert am.actions.get("broken_ping") is None and am.actions.get("echo") is None
    assert am.actions.health()["status"] == "degraded"


def test_all_errors_of_a_file_at_once(actions_app: Any, actions_dir: Path) -> None:
    app = actions_app()
    text = (
        "version: 1\nmodule: demo\nbogus: 1\nactions:\n"
        "  echo:\n    handler: nope\n    methods: [GET, YANK]\n"
        "    params:\n      p: {type: int}\n      q: {type: string, minLength: 3, maxLength: 1}\n"
    )
    path = write(actions_dir / "demo.yaml", text)
    am = app.extensions["keel"]
    am.actions.reload()
    errors = am.actions.status()["errors"]
    assert [e.split(": ")[0] + ": " + e.split(": ")[1] for e in errors] == [
        f"{path}:3:1: bogus",
        f"{path}:6:14: handler",
        f"{path}:7:20: methods[1]",
        f"{path}:9:17: params.p.type",
        f"{path}:10:36: params.q.minLength",
    ]
    assert app.test_client().get("/actions/echo?title=x").status_code == 200


def test_module_file_cannot_claim_another_module(actions_app: Any, modules_dir: Path) -> None:
    app = actions_app()
    path = modules_dir / "broken" / "actions.yaml"
    write(path, "version: 1\nmodule: demo\nactions: {}\n")
    am = app.extensions["keel"]
    am.actions.reload()
    assert f"{path}:2:9: module: this file belongs to module 'broken'" in "\n".join(am.actions.status()["errors"])


def test_error_paths_are_project_relative_inside_the_project() -> None:
    root = Path(__file__).resolve().parents[2]
    assert display_path(root / "actions" / "tasks.yaml") == "actions/tasks.yaml"
    assert display_path(Path("/etc/keel/x.yaml")) == "/etc/keel/x.yaml"


def test_nothing_in_a_file_is_executed(actions_app: Any, actions_dir: Path, tmp_path: Path) -> None:
    app = actions_app()
    marker = tmp_path / "pwned"
    text = H + f'  echo:\n    handler: echo\n    description: !!python/object/apply:os.system ["touch {marker}"]\n'
    write(actions_dir / "demo.yaml", text)
    app.extensions["keel"].actions.reload()
    assert not marker.exists()
