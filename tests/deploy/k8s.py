"""The Kubernetes side of the deployment tests: the ConfigMap of actions/ and the kubelet's
atomic-writer layout of a ConfigMap volume.

``deploy/k8s/configmap-actions.yaml`` holds ``actions/*.yaml`` verbatim; after changing actions/,
regenerate it with ``.venv/bin/python -m tests.deploy.k8s`` (a test fails while they differ).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
CONFIGMAP = K8S / "configmap-actions.yaml"

HEADER = """\
# The actions directory of every Keel pod (mounted at ACTIONS_DIR=/etc/keel/actions, see
# deployment.yaml): actions/*.yaml, one key per file. Edit and `kubectl apply -f` this file (or
#   kubectl create configmap keel-actions --from-file=actions/ --dry-run=client -o yaml | kubectl apply -f -)
# and the kubelet swaps the volume's `..data` symlink in every pod; Keel reloads on the swap.
# A file with errors keeps its last good version serving (see /health and the reload metrics).
# Generated from actions/ by `python -m tests.deploy.k8s`; tests/deploy checks they agree.
"""


def actions_files() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "actions").glob("*.yaml"))}


class _Literal(str):
    pass


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def render_configmap(files: dict[str, str]) -> str:
    dumper = type("Dumper", (yaml.SafeDumper,), {})
    dumper.add_representer(_Literal, _literal)
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "keel-actions", "labels": {"app.kubernetes.io/name": "keel"}},
        "data": {name: _Literal(text) for name, text in files.items()},
    }
    return HEADER + yaml.dump(doc, Dumper=dumper, sort_keys=False, width=1000, allow_unicode=True)


def load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / name).read_text()))


class ProjectedVolume:
    """A ConfigMap volume as the kubelet's atomic writer lays it out: the files in a hidden
    versioned directory, ``..data`` -> it, and each key a symlink ``<key> -> ..data/<key>``.
    :meth:`update` is what a ``kubectl apply`` of a changed ConfigMap does in every pod."""

    def __init__(self, root: Path, data: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._version = 0
        self.update(data)

    def update(self, data: dict[str, str]) -> None:
        self._version += 1
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.") + str(self._version)
        version_dir = self.root / stamp
        version_dir.mkdir()
        for key, text in data.items():
            (version_dir / key).write_text(text, encoding="utf-8")
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        os.symlink(stamp, self.root / "..data_tmp")
        os.rename(self.root / "..data_tmp", self.root / "..data")  # the atomic swap
        for key in data:
            if not (self.root / key).is_symlink():
                os.symlink(f"..data/{key}", self.root / key)
        for entry in self.root.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in data:
                entry.unlink()  # a key removed from the ConfigMap
        if old is not None:
            shutil.rmtree(self.root / old)


if __name__ == "__main__":
    CONFIGMAP.write_text(render_configmap(actions_files()), encoding="utf-8")
    print(f"wrote {CONFIGMAP.relative_to(ROOT)} from actions/")
