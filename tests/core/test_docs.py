"""The generated parts of docs/ match the code they are generated from."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_generated_docs_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, "docs/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr + "\nrun: python docs/generate.py"


def test_docs_stay_inside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "SPEC" not in text, path


def test_item_22_the_readme_lists_the_tools_its_examples_use() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_use = text.index("| jq")
    assert "apt-get install curl jq" in text[:first_use]
