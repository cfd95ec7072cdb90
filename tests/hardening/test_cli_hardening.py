"""Hardening (issue 12) item 20: CLI commands print their output, not start-up log lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.hardening.flask_cli import run_flask

ROOT = Path(__file__).resolve().parents[2]


def _flask(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_flask(tmp_path, *args)


def test_item_20_cli_logs_at_warning_unless_verbose(tmp_path: Path) -> None:
    quiet = _flask(tmp_path, "modules", "list")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines()[0].startswith("auth ")
    assert " INFO " not in quiet.stderr and " INFO " not in quiet.stdout, quiet.stderr
    verbose = _flask(tmp_path, "modules", "-v", "list")
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout == quiet.stdout  # the output itself is the same, on stdout
    assert " INFO " in verbose.stderr and "module auth" in verbose.stderr
