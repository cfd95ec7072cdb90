"""hvac (~6 MiB per process with its dependencies) is loaded only by a process that talks to Vault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import sys, tempfile
sys.path.insert(0, sys.argv[1])
from core import create_app
tmp = tempfile.mkdtemp()
app = create_app({"APP_ENV": "development", "LOG_LEVEL": "ERROR", "DATABASE_URL": f"sqlite:///{tmp}/k.db",
                  "SECRETS_DIR": tmp, "ACTIONS_RELOAD_INTERVAL": 0}, env={})
print("hvac" in sys.modules)
app.extensions["keel"].dispose()
"""


def test_hvac_is_not_imported_without_vault_addr(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE, str(ROOT)], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.strip().splitlines()[-1] == "False"
