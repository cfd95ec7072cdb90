"""Run the project's ``flask`` CLI in a subprocess, the way an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_flask(tmp_path: Path, *args: str, timeout: int = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``flask --app app ARGS`` with APP_ENV=test, no Redis, an SQLite file and secrets under
    ``tmp_path`` unless ``env`` says otherwise."""
    full = {
        **os.environ,
        "APP_ENV": "test",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SECRETS_DIR": str(tmp_path / "secrets"),
        **env,
    }
    full.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
