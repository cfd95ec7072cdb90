"""The CLI as an operator runs it: `flask --app app ...` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def flask(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "actions").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "REDIS_", "DATABASE_"))}
    base.update(
        APP_ENV="test",
        DATABASE_URL=f"sqlite:///{tmp_path / 'keel.db'}",
        SECRETS_DIR=str(tmp_path),
        ACTIONS_DIR=str(tmp_path / "actions"),
        ACTIONS_RELOAD_INTERVAL="0",
        MODULES_DIR=str(ROOT / "modules"),
        **env,
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / "flask"), "--app", str(ROOT / "app.py"), *args],
        cwd=tmp_path, env=base, capture_output=True, text=True, timeout=60, check=False,
    )


def test_config_show_prints_only_rows_on_stdout(tmp_path: Path) -> None:
    result = flask(tmp_path, "config", "show", JWT_SECRET_KEY="env-secret-" + "x" * 32, PORT="8181")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert all(len(row) in (2, 3) for row in rows), result.stdout  # logs went to stderr
    table = {row[0]: row[1:] for row in rows}
    assert table["PORT"] == ["env", "8181"]
    assert table["JWT_SECRET_KEY"] == ["env", "********"]
    assert "env-secret" not in result.stdout + result.stderr
    assert "keel 0.1.0 started" not in result.stderr  # INFO start-up lines only with -v
    verbose = flask(tmp_path, "config", "-v", "show", JWT_SECRET_KEY="env-secret-" + "x" * 32, PORT="8181")
    assert verbose.stdout == result.stdout and "keel 0.1.0 started" in verbose.stderr


def test_bad_setting_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    result = flask(tmp_path, "config", "show", PORT="eighty")
    assert result.returncode == 1
    assert result.stderr.strip() == "keel: cannot start: PORT from env: expected an integer, got 'eighty'"
    assert "Traceback" not in result.stderr
