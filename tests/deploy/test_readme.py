"""README "Deployment": the commands it shows name the files, targets and objects the
deployment tests exercise (so that the section cannot drift from what CI proves)."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from tests.deploy import k8s

# Made by the commands the section shows (git-ignored).
NOT_IN_THE_REPOSITORY = {"deploy/secrets/"}


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("<!-- section:deploy -->", 1)[1].split("<!-- /section:deploy -->", 1)[0]


def _commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", _section(), re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_repository_path_in_the_section_exists() -> None:
    paths = set(re.findall(r"(?<![\w/.-])((?:deploy|tests)/[\w./-]+|Dockerfile|requirements\.txt)", _section()))
    assert "deploy/docker-compose.yml" in paths and "deploy/k8s/" in paths
    missing = [p for p in sorted(paths - NOT_IN_THE_REPOSITORY) if not (ROOT / p.rstrip(".")).exists()]
    assert not missing, missing


def test_the_commands_are_the_ones_the_tests_replay() -> None:
    commands = _commands()
    assert "make wheelhouse" in commands and "wheelhouse:" in (ROOT / "Makefile").read_text()
    assert ".venv/bin/pip install --no-index --find-links wheelhouse -r requirements.txt" in commands
    assert "--no-index --find-links" in (ROOT / "deploy" / "install-runtime.sh").read_text()
    assert "sh deploy/make-secrets.sh" in commands
    assert "docker compose -f deploy/docker-compose.yml up -d --build" in commands
    assert "gunicorn -c deploy/gunicorn.conf.py app:app" in commands
    secret = k8s.load("deployment.yaml")["spec"]["template"]["spec"]["volumes"]
    secret_name = next(v["secret"]["secretName"] for v in secret if "secret" in v)
    assert f"kubectl create secret generic {secret_name} --from-file=deploy/secrets/" in commands
    configmap = k8s.load("configmap-actions.yaml")["metadata"]["name"]
    assert any(c.startswith(f"kubectl create configmap {configmap} --from-file=actions/") for c in commands)
    assert "kubectl apply -f deploy/k8s/" in commands
